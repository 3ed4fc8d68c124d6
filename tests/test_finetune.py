"""Fine-tuning modes and head modes: what trains, what stays frozen (BatchNorm statistics included)."""

from __future__ import annotations

import urllib.error
from functools import partial
from pathlib import Path

import pytest
import torch
import torchvision
from lightning.pytorch import Callback
from torch.nn.modules.batchnorm import _BatchNorm

from lit_transfer.data import ImageFolderDataModule
from lit_transfer.errors import UserError
from lit_transfer.finetune.freezing import FreezeBackbone
from lit_transfer.models import FineTuneClassifier
from lit_transfer.nets import SimpleCNN, TorchvisionNet
from tests.conftest import alexnet_task_args, quiet_trainer, short_epoch_args


class Snapshot(Callback):
    """The net's state when training starts (after pretrained weights are loaded) and the train/eval
    mode of its BatchNorm layers at every training batch."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.bn_training: list[bool] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.before = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.bn_training += [m.training for m in pl_module.net.modules() if isinstance(m, _BatchNorm)]


def changed_keys(before: dict[str, torch.Tensor], net: torch.nn.Module) -> set[str]:
    return {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}


def fit_a_few_steps(net, data_root: Path, finetune: str, tmp_path: Path, weights: str | None = None, steps: int = 3):
    model = FineTuneClassifier(
        net=net, num_classes=3, weights=weights, finetune=finetune, optimizer=partial(torch.optim.Adam, lr=1e-2)
    )
    data = ImageFolderDataModule(str(data_root), batch_size=8, num_workers=0, image_size=64, augment="flip")
    snapshot = Snapshot()
    trainer = quiet_trainer(tmp_path, max_steps=steps, limit_val_batches=0, callbacks=[snapshot])
    trainer.fit(model, datamodule=data)
    return model, trainer, snapshot


def test_feature_extractor_trains_only_the_head_and_keeps_batchnorm_statistics(split_folder, tmp_path):
    model, trainer, snapshot = fit_a_few_steps(partial(SimpleCNN, width=8), split_folder, "feature_extractor", tmp_path)
    assert trainer.global_step == 3
    assert changed_keys(snapshot.before, model.net) == {"head.weight", "head.bias"}
    # running_mean/var and num_batches_tracked of every BatchNorm are among the unchanged keys
    assert any(k.endswith("running_mean") for k in snapshot.before)
    assert snapshot.bn_training and not any(snapshot.bn_training)  # frozen BN ran in eval mode
    optimizer_params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert {id(p) for p in optimizer_params} == {id(p) for p in model.net.head.parameters()}
    assert [p.requires_grad for p in model.net.parameters()].count(True) == 2


def test_full_finetuning_trains_everything_and_batchnorm_statistics_move(split_folder, tmp_path):
    model, trainer, snapshot = fit_a_few_steps(partial(SimpleCNN, width=8), split_folder, "full", tmp_path)
    assert changed_keys(snapshot.before, model.net) == set(snapshot.before)  # weights, BN stats, counters
    assert all(snapshot.bn_training)
    optimizer_params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert len(optimizer_params) == len(list(model.net.parameters()))


def test_feature_extractor_on_a_pretrained_torchvision_resnet(split_folder, tmp_path):
    """The generic path: a torchvision ResNet (BatchNorm everywhere) loaded from a .pth file."""
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    net = partial(TorchvisionNet, name="resnet18")
    model, _, snapshot = fit_a_few_steps(
        net, split_folder, "feature_extractor", tmp_path, weights=str(tmp_path / "resnet18.pth"), steps=2
    )
    assert model.weights_report is not None and len(model.weights_report.loaded) == len(source.state_dict()) - 2
    assert torch.equal(snapshot.before["model.layer1.0.bn1.running_mean"], source.layer1[0].bn1.running_mean)
    assert changed_keys(snapshot.before, model.net) == {"model.fc.weight", "model.fc.bias"}


def test_a_weights_name_is_checked_when_the_model_is_built():
    with pytest.raises(UserError, match="SimpleCNN is not a torchvision model"):
        FineTuneClassifier(net=SimpleCNN, num_classes=2, weights="DEFAULT")
    model = FineTuneClassifier(net=SimpleCNN, num_classes=2, weights="/not/yet/there.pth")  # read at fit start
    assert model.weights_report is None


def test_freeze_backbone_callback_refuses_a_net_without_a_head_interface():
    with pytest.raises(TypeError, match="not a ClassifierNet"):
        FreezeBackbone().freeze_before_training(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def alexnet_pth(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def tiny_task_args(split_folder: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The task config at 64 px on tiny data, two steps, no checkpoint files (AlexNet's are 0.7 GB)."""
    return alexnet_task_args(split_folder, tmp_path, *short_epoch_args(), *extra, batch_size=8)


def test_both_head_modes_train_through_the_cli(run_cli, split_folder, tmp_path, alexnet_pth):
    file_state = torch.load(alexnet_pth, weights_only=True)
    # replace + full: classifier[6] becomes Linear(4096, 3); every layer trains.
    cli = run_cli(*tiny_task_args(split_folder, tmp_path / "replace", "--model.weights", str(alexnet_pth)))
    net = cli.model.net
    assert cli.trainer.global_step == 2 and net.head_name == "model.classifier.6"
    assert net.get_classifier().weight.shape == (3, 4096)
    assert len(cli.model.weights_report.loaded) == 14
    assert not torch.equal(net.model.features[0].weight, file_state["features.0.weight"])  # it trained
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])

    # append + feature_extractor: the 1000-way output stays, Linear(1000, 3) is the only thing that trains.
    cli = run_cli(
        *tiny_task_args(
            split_folder,
            tmp_path / "append",
            "--model.weights",
            str(alexnet_pth),
            "--model.net.init_args.head",
            "append",
            "--model.finetune",
            "feature_extractor",
        )
    )
    net = cli.model.net
    assert cli.trainer.global_step == 2 and net.head_name == "head"
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    for key, value in file_state.items():  # the whole torchvision AlexNet, classifier[6] included, is untouched
        assert torch.equal(net.model.state_dict()[key], value), key
    optimizer_params = [p for group in cli.trainer.optimizers[0].param_groups for p in group["params"]]
    assert {id(p) for p in optimizer_params} == {id(net.head.weight), id(net.head.bias)}
    assert cli.model.hparams.weights == str(alexnet_pth) and cli.model.hparams.finetune == "feature_extractor"


def test_resuming_from_a_checkpoint_does_not_need_the_pretrained_weights(run_cli, split_folder, tmp_path, monkeypatch):
    """Weights named in the config are loaded only when no checkpoint is restored: offline, with an
    empty torch cache, resuming still works (the checkpoint holds the weights)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    small = [
        "--model.net.class_path",
        "lit_transfer.nets.TorchvisionNet",
        "--model.net.init_args.name",
        "mobilenet_v3_small",
    ]
    args = tiny_task_args(
        split_folder, tmp_path, *small, "--model.weights", "null", "--last_checkpoint.save_top_k", "1"
    )
    first = run_cli(*args)
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    # With weights DEFAULT and no checkpoint, the missing file is a clear error ...
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args[:-4], "--model.weights", "DEFAULT")
    assert exit_info.value.code == 2
    # ... but resuming from the checkpoint never asks for it.
    resumed = run_cli(*args[:-4], "--model.weights", "DEFAULT", "--trainer.max_epochs", "2", "--ckpt_path", str(last))
    assert resumed.trainer.current_epoch == 2 and resumed.model.weights_report is None
