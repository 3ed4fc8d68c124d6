"""Gradual unfreezing: stages join the optimizer with their group's options at their epoch, LR
schedulers take the groups added later, and a run resumed after an unfreeze equals one never stopped."""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback
from torch.nn.modules.batchnorm import _BatchNorm

from lit_transfer.data import ImageFolderDataModule
from lit_transfer.errors import UserError
from lit_transfer.finetune.freezing import GradualUnfreezing
from lit_transfer.models import FineTuneClassifier
from lit_transfer.nets import TorchvisionNet
from tests.conftest import catsdogs_resnet18_args, last_checkpoint, quiet_trainer, resnet18_feature_extractor
from tests.test_param_groups import RECIPE


class GroupRecorder(Callback):
    """At each epoch's first batch (after the unfreezing callback ran): the optimizer's groups and
    which stages train."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx:
            return
        net = pl_module.net.model
        self.epochs.append(
            {
                "groups": [
                    {k: g[k] for k in ("name", "lr", "initial_lr", "momentum")} | {"n": len(g["params"])}
                    for g in trainer.optimizers[0].param_groups
                ],
                "trains": {
                    s: all(p.requires_grad for p in getattr(net, s).parameters()) for s in ("layer3", "layer4", "fc")
                },
                "bn_train": {
                    s: all(m.training for m in getattr(net, s).modules() if isinstance(m, _BatchNorm))
                    for s in ("layer3", "layer4")
                },
            }
        )


def test_stages_join_the_optimizer_at_their_epoch_with_their_group_options(class_folder, tmp_path):
    model = resnet18_feature_extractor(
        lr=1e-3,
        param_groups=RECIPE,
        unfreeze={1: ["layer4"], 2: ["layer3"]},
        lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4),
    )
    data = ImageFolderDataModule(str(class_folder), batch_size=8, num_workers=0, image_size=32, resize_size=32)
    recorder = GroupRecorder()
    quiet_trainer(tmp_path, max_epochs=4, limit_train_batches=1, limit_val_batches=0, callbacks=[recorder]).fit(
        model, datamodule=data
    )

    layer3, layer4 = (len(list(getattr(model.net.model, s).parameters())) for s in ("layer3", "layer4"))
    names = [[(g["name"], g["n"], g["initial_lr"], g["momentum"]) for g in e["groups"]] for e in recorder.epochs]
    assert names[0] == [("head", 2, 1e-3, 0.9)]
    assert names[1] == [("head", 2, 1e-3, 0.9), ("layer4", layer4, 1e-4, 0.9)]
    assert names[2] == names[3] == names[1] + [("early", layer3, 1e-5, 0.1)]  # layer3 is in group "early"
    assert [e["trains"] for e in recorder.epochs[:3]] == [
        {"layer3": False, "layer4": False, "fc": True},
        {"layer3": False, "layer4": True, "fc": True},
        {"layer3": True, "layer4": True, "fc": True},
    ]
    assert recorder.epochs[1]["bn_train"] == {"layer3": False, "layer4": True}  # frozen BatchNorm stays in eval
    # The cosine schedule scales every group alike, the ones added later included (torch's own
    # scheduler would keep their lr fixed): lr / initial_lr is the same for all groups at each epoch.
    for epoch, record in enumerate(recorder.epochs):
        factors = [g["lr"] / g["initial_lr"] for g in record["groups"]]
        assert factors == pytest.approx([factors[0]] * len(factors)), epoch
        assert factors[0] == pytest.approx((1 + torch.cos(torch.tensor(epoch * torch.pi / 4)).item()) / 2)


def test_unfreezing_adds_batchnorm_weights_equal_to_ones_already_in_the_optimizer():
    """Lightning's unfreeze_and_add_param_group would drop model.bn1 here: its fresh weights (all ones)
    equal those of layer1's BatchNorms, already in the optimizer."""
    net = TorchvisionNet(num_classes=2, name="resnet18")
    net.requires_grad_(False)
    net.model.layer1.requires_grad_(True)
    optimizer = torch.optim.SGD(net.model.layer1.parameters(), lr=0.1)
    module = SimpleNamespace(net=net, trainer=SimpleNamespace(lr_scheduler_configs=[]))
    GradualUnfreezing({}).unfreeze(module, ["model.bn1"], optimizer, epoch=3)
    assert optimizer.param_groups[-1]["params"] == [net.model.bn1.weight, net.model.bn1.bias]
    assert optimizer.param_groups[-1]["name"] == "default"


def test_unfreeze_needs_a_frozen_start():
    with pytest.raises(UserError, match="finetune: feature_extractor"):
        FineTuneClassifier(net=partial(TorchvisionNet, name="resnet18"), num_classes=2, unfreeze={1: ["layer4"]})
    with pytest.raises(UserError, match="no module 'layer5'"):
        FineTuneClassifier(
            net=partial(TorchvisionNet, name="resnet18"),
            num_classes=2,
            finetune="feature_extractor",
            unfreeze={1: ["layer5"]},
        )


def gradual_args(data_root: Path, root: Path, *extra: str) -> list[str]:
    """The task config, gradual unfreezing with a per-step OneCycleLR, resnet18 at 32 px on tiny data; last.ckpt
    only (writing files is most of the time here)."""
    return catsdogs_resnet18_args(
        data_root,
        root,
        "--model.finetune",
        "feature_extractor",
        "--model.unfreeze",
        "{1: [layer4], 2: [layer3]}",
        "--model.lr_scheduler.class_path",
        "torch.optim.lr_scheduler.OneCycleLR",
        "--model.lr_scheduler.init_args.max_lr",
        "0.01",
        "--trainer.max_epochs",
        "3",
        "--trainer.deterministic",
        "true",
        *extra,
    )


def final_state(root: Path) -> dict:
    ckpt = torch.load(last_checkpoint(root), weights_only=True)
    groups = [
        (g["name"], g["lr"], g["momentum"], g["initial_lr"], g["max_lr"], len(g["params"]))
        for g in ckpt["optimizer_states"][0]["param_groups"]
    ]
    return {"epoch": ckpt["epoch"], "groups": groups, "weights": ckpt["state_dict"]}


def test_a_run_resumed_after_an_unfreeze_equals_one_never_stopped(run_cli, class_folder, tmp_path, caplog):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_cli(*gradual_args(class_folder, straight))

    stop = json.dumps({"class_path": "tests.helpers.StopAfterEpoch", "init_args": {"epoch": 1}})
    first = run_cli(*gradual_args(class_folder, resumed, "--trainer.callbacks+", stop))
    assert first.trainer.current_epoch == 2  # epochs 0 and 1 done: layer4 unfrozen, layer3 not yet
    ckpt = torch.load(last_checkpoint(resumed), weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["callbacks"]["GradualUnfreezing"]["unfrozen"] == ["model.layer4"]
    assert [g["name"] for g in ckpt["optimizer_states"][0]["param_groups"]] == ["head", "layer4"]

    caplog.set_level(logging.INFO)
    caplog.clear()
    cli = run_cli(*gradual_args(class_folder, resumed, "--ckpt_path", "last"))
    assert cli.trainer.current_epoch == 3  # epoch 2 (unfreezing layer3) ran after the resume
    # The groups are said as the resumed run has them: layer4 is back in the optimizer.
    (said,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optimizer parameter groups")]
    assert re.search(r"\n  layer4: \d+ tensors", said) and "no trainable parameters now): early" in said
    assert "layer4" not in said.split("not in the optimizer")[1]
    assert all(p.requires_grad for p in cli.model.net.model.layer4.parameters())  # trainable again after the resume

    a, b = final_state(straight), final_state(resumed)
    assert a["epoch"] == b["epoch"] == 2
    # head, layer4 and layer3 (in "early": momentum 0.1 before OneCycleLR cycles it) with OneCycleLR's per-group entries
    assert [g[0] for g in a["groups"]] == ["head", "layer4", "early"]
    assert b["groups"] == a["groups"]
    assert a["weights"].keys() == b["weights"].keys()
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key
