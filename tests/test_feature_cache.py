"""The feature cache for a frozen backbone, and the forward_features/forward_head split it uses."""

from __future__ import annotations

import csv
import logging
from functools import partial
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_transfer.data import ImageFolderDataModule
from lit_transfer.errors import UserError
from lit_transfer.models import FineTuneClassifier
from lit_transfer.nets import AlexNet, AlexNet32, SimpleCNN, TorchvisionNet
from tests.conftest import FROZEN_CACHED, predict_args, quiet_trainer, resnet18_feature_extractor, written
from tests.test_param_groups import tiny_task_args


@pytest.mark.parametrize(
    "make_net, size, feature_shape",
    [
        (partial(SimpleCNN, num_classes=3, width=8), 32, (32,)),
        (partial(AlexNet32, num_classes=3), 32, (4608,)),
        (partial(TorchvisionNet, num_classes=3, name="resnet18"), 32, (512,)),
        (partial(TorchvisionNet, num_classes=3, name="mobilenet_v3_small"), 32, (1024,)),  # head = classifier.3
        (partial(AlexNet, num_classes=3, head="append"), 64, (1000,)),  # head = the appended Linear(1000, 3)
    ],
)
def test_the_head_applied_to_the_features_is_the_net(make_net, size, feature_shape):
    torch.manual_seed(0)
    net = make_net().eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = net.forward_features(x)
        assert features.shape == (2, *feature_shape)
        assert torch.allclose(net.forward_head(features), net(x), atol=1e-6)
    assert not net.get_classifier()._forward_pre_hooks  # the hook is gone again


class CountImages:
    """A forward pre-hook that counts the images reaching the backbone's first layer."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, module, args) -> None:
        self.seen += len(args[0])


def fit_head(data_root: Path, tmp_path: Path, feature_cache: bool, epochs: int = 3):
    model = resnet18_feature_extractor(lr=0.01, feature_cache=feature_cache)
    counter = CountImages()
    model.net.model.conv1.register_forward_pre_hook(counter)
    data = ImageFolderDataModule(
        str(data_root), batch_size=8, num_workers=0, image_size=32, resize_size=32, augment="none"
    )
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    return model, trainer, counter.seen


def test_cached_features_train_the_same_head_reading_each_image_once(class_folder, tmp_path):
    plain, plain_trainer, plain_seen = fit_head(class_folder, tmp_path / "plain", feature_cache=False)
    cached, cached_trainer, cached_seen = fit_head(class_folder, tmp_path / "cached", feature_cache=True)
    assert plain_seen == 3 * (24 + 6)  # 3 epochs of 24 training and 6 validation images
    assert cached_seen == 24 + 6  # once, for the cache
    for key, value in plain.net.state_dict().items():  # the head trained alike, the backbone untouched in both
        assert torch.allclose(cached.net.state_dict()[key], value, atol=1e-5), key
    assert not torch.equal(cached.net.model.fc.weight, TorchvisionNet(3, name="resnet18").model.fc.weight)
    for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert cached_trainer.callback_metrics[name] == pytest.approx(
            plain_trainer.callback_metrics[name].item(), abs=1e-5
        )
    # After the fit the model and the data module are back on images.
    assert not cached.cached_features.active
    assert cached_trainer.datamodule.train_set[0][0].shape == (3, 32, 32)
    assert cached(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_a_cached_run_logs_and_checkpoints_the_whole_model_and_predicts_from_it(run_cli, class_folder, tmp_path):
    args = tiny_task_args(
        class_folder,
        tmp_path,
        *FROZEN_CACHED,
        "--trainer.max_epochs",
        "2",
        "--last_checkpoint.save_top_k",
        "1",
    )
    cli = run_cli(*args)
    events = EventAccumulator(str(cli.trainer.log_dir)).Reload()
    assert {"train/loss", "val/loss", "val/acc", "lr-SGD/head"} <= set(events.Tags()["scalars"])
    assert "val/confusion_matrix" in events.Tags()["images"]  # no image grid: validation saw features
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert set(state) == {f"net.{k}" for k in cli.model.net.state_dict()}  # backbone and head
    assert torch.equal(state["net.model.fc.weight"], cli.model.net.model.fc.weight)

    run_cli(*predict_args(last, class_folder / "circle", tmp_path / "predict"))
    rows = list(csv.DictReader(written(tmp_path / "predict", "predictions-*.csv")[0].open()))
    assert len(rows) == 10 and {r["class_name"] for r in rows} <= {"circle", "square", "triangle"}


def test_the_cache_needs_a_frozen_backbone_and_unaugmented_images(run_cli, class_folder, tmp_path, capsys):
    net = partial(TorchvisionNet, name="resnet18")
    with pytest.raises(UserError, match="stays frozen"):
        FineTuneClassifier(net=net, num_classes=2, feature_cache=True)
    with pytest.raises(UserError, match="stays frozen"):
        FineTuneClassifier(
            net=net, num_classes=2, finetune="feature_extractor", unfreeze={1: ["layer4"]}, feature_cache=True
        )
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            *tiny_task_args(
                class_folder, tmp_path, "--model.finetune", "feature_extractor", "--model.feature_cache", "true"
            )
        )
    assert exit_info.value.code == 2
    assert "set --data.augment none (now 'imagenet')" in capsys.readouterr().err


def test_the_cache_says_how_far_it_is_while_it_computes(class_folder, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        fit_head(class_folder, tmp_path / "cached", feature_cache=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache: ")]
    progress = [line for line in lines if " images " in line and "/" in line]
    assert any("training images 24/24" in line for line in progress)
    assert any("validation images 6/6" in line for line in progress)
    assert len(progress) >= 2 and lines[-1].startswith("feature cache: computed")


@pytest.mark.parametrize(
    "scheduler",
    [
        [
            "--model.lr_scheduler.class_path",
            "torch.optim.lr_scheduler.OneCycleLR",
            "--model.lr_scheduler.max_lr",
            "0.01",
        ],
        [
            "--model.lr_scheduler.class_path",
            "torch.optim.lr_scheduler.CosineAnnealingLR",
            "--model.lr_scheduler.T_max",
            "2",
        ],
    ],
    ids=["one_cycle", "cosine"],
)
def test_the_cache_trains_the_head_under_any_scheduler(class_folder, tmp_path, run_cli, scheduler):
    """A scheduler that counts the run's steps made Lightning build the image loader before the cache
    swapped in its features: the head was then fed images (a shape mismatch in the first step)."""
    args = tiny_task_args(
        class_folder,
        tmp_path,
        *FROZEN_CACHED,
        "--trainer.max_epochs",
        "2",
        *scheduler,
    )
    cli = run_cli(*args)
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 2 * cli.trainer.num_training_batches
    assert not cli.model.cached_features.active  # the data module has its images back
