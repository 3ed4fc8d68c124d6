"""End to end on the real ants vs bees set (skipped without hymenoptera_data in $LIT_TRANSFER_DATA, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lit_transfer.data.folder import SKIPPED_IMAGES_FILE
from tests.conftest import SHARED_DATA, alexnet_task_args

HYMENOPTERA = SHARED_DATA / "hymenoptera_data"
pytestmark = pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="needs the shared hymenoptera_data folder")


def task_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The task config from random weights at 64 px (AlexNet's smallest comfortable size)."""
    return alexnet_task_args(
        root, tmp_path, "--model.weights", "null", "--data.download", "false", *extra, num_workers=2
    )


def test_one_full_epoch_over_every_file(run_cli, tmp_path):
    files = sorted(p for p in HYMENOPTERA.rglob("*") if p.is_file())
    # feature_extractor keeps the CPU cost of AlexNet's backward pass and Adam step small
    cli = run_cli(*task_args(HYMENOPTERA, tmp_path, "--model.finetune", "feature_extractor"))
    data = cli.datamodule
    assert data.class_names == ["ants", "bees"] and data.skipped == []
    # Every file on disk is a sample (the GIF and the .jpeg included), decoded by the scan and again by
    # one full training epoch and one full validation run.
    samples = [path for path, _ in data.train_set.samples + data.val_set.samples]
    assert sorted(samples) == [str(p) for p in files]
    assert any(p.endswith("imageNotFound.gif") for p in samples)
    assert cli.trainer.global_step == -(-len(data.train_set) // 32)
    assert cli.trainer.num_val_batches == [-(-len(data.val_set) // 64)]
    assert 0.0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1.0


def test_a_corrupt_jpeg_and_an_empty_file_are_skipped_and_listed(run_cli, tmp_path):
    copy = tmp_path / "hymenoptera_copy"
    for path in HYMENOPTERA.rglob("*"):  # links keep the 46 MB copy instant
        if path.is_file():
            target = copy / path.relative_to(HYMENOPTERA)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target)
    real = next((HYMENOPTERA / "train" / "bees").glob("*.jpg")).read_bytes()
    corrupt = copy / "train" / "bees" / "corrupt.jpg"
    corrupt.write_bytes(real[: len(real) // 3])
    empty = copy / "val" / "ants" / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.warns(UserWarning) as warned:
        cli = run_cli(
            *task_args(
                copy,
                tmp_path / "run",
                "--model.finetune",
                "feature_extractor",
                "--trainer.limit_train_batches",
                "2",
                "--trainer.limit_val_batches",
                "1",
            )
        )
    messages = [str(w.message) for w in warned if "unreadable image file" in str(w.message)]
    assert any("skipped 1" in m and "corrupt.jpg" in m and "truncated" in m for m in messages)
    assert any("skipped 1" in m and "empty.jpg (empty file)" in m for m in messages)
    assert cli.trainer.global_step == 2
    assert (len(cli.datamodule.train_set), len(cli.datamodule.val_set)) == (245, 153)
    listing = (Path(cli.trainer.log_dir) / SKIPPED_IMAGES_FILE).read_text()
    assert f"{corrupt}\t" in listing and f"{empty}\tempty file" in listing
