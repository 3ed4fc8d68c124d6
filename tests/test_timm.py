"""timm's models through ``lit_transfer.nets.TimmNet``: the same interface, weights from a file saved
from the timm model, preprocessing from its pretrained config (the ``timm`` extra)."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import catsdogs_resnet18_args, exit_message, last_checkpoint

timm = pytest.importorskip("timm", reason="the timm extra: pip install -e '.[timm]'")

from lit_transfer.nets import TimmNet  # noqa: E402

TIMM = ["--model.net", "lit_transfer.nets.TimmNet", "--model.net.init_args.name", "resnet18"]


def test_the_input_comes_from_the_models_pretrained_config():
    net = TimmNet(3, "resnet18")
    cfg = net.model.pretrained_cfg
    assert (net.preprocessing.image_size, net.preprocessing.interpolation) == (224, cfg["interpolation"])
    assert net.preprocessing.resize_size == int(224 / cfg["crop_pct"])  # timm's eval resize: 235 for 0.95
    assert net.head_name == "model.fc" and net.get_classifier().out_features == 3
    assert net.stages()[0] == "model.conv1" and net.find_module("layer4") == "model.layer4"


def test_a_timm_model_fine_tunes_from_a_weights_file_with_the_task_configs_groups(class_folder, tmp_path, run_cli):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=1000)
    weights = tmp_path / "resnet18_timm.pth"
    torch.save(source.state_dict(), weights)
    args = catsdogs_resnet18_args(
        class_folder, tmp_path, *TIMM, "--model.weights", str(weights), "--trainer.max_epochs", "1"
    )
    cli = run_cli(*args)
    groups = {g["name"]: g["lr"] for g in cli.trainer.optimizers[0].param_groups}
    assert groups == {"early": 1e-5, "layer4": 1e-4, "head": 1e-3}  # the ResNet50 config's groups, by module name
    saved = torch.load(last_checkpoint(tmp_path), weights_only=True)["state_dict"]
    assert saved["net.model.fc.weight"].shape == (3, 512)  # a new head for the 3 classes
    # The early group's lr is 1e-5: after one short epoch the stem is still the file's, give or take.
    assert torch.allclose(saved["net.model.conv1.weight"], source.conv1.weight, atol=1e-3)


def test_an_unknown_name_or_missing_timm_is_one_line(class_folder, tmp_path, run_cli, capsys, monkeypatch):
    args = catsdogs_resnet18_args(class_folder, tmp_path, "--model.net", "lit_transfer.nets.TimmNet")
    line = exit_message(run_cli, capsys, *args, "--model.net.init_args.name", "resnet_nope")
    assert "unknown timm model 'resnet_nope'" in line
    monkeypatch.setitem(sys.modules, "timm", None)
    line = exit_message(run_cli, capsys, *args, "--model.net.init_args.name", "resnet18")
    assert "TimmNet needs timm: pip install 'lit-transfer[timm]'" in line
