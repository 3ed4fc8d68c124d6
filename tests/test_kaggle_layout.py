"""Kaggle's flat dogs-vs-cats layout (``cat.123.jpg``): labels from the names, a stratified split,
recognised by itself; and the task end to end on the real subset when it is there."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from lit_transfer.data import ImageFolderDataModule
from lit_transfer.data.folder import SKIPPED_IMAGES_FILE
from lit_transfer.errors import UserError
from tests.conftest import (
    CATSDOGS_CONFIG,
    SHARED_DATA,
    catsdogs_resnet18_args,
    image_folder_args,
    predict_args,
    quiet_run_args,
    written,
)

KAGGLE = SHARED_DATA / "dogs_vs_cats_kaggle_subset"


def write_flat_folder(root: Path, counts: dict[str, int], size: int = 24) -> Path:
    """``root/<class>.<n>.jpg``; cats reddish, dogs greenish, so a net can tell them apart."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for label, count in counts.items():
        for n in range(count):
            tint = (200, rng.randrange(60), 40) if label == "cat" else (40, 200, rng.randrange(60))
            Image.new("RGB", (size + n % 7, size), tint).save(root / f"{label}.{n * 3}.jpg")
    return root


def module(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), **{"batch_size": 4, "num_workers": 0, "image_size": 16, **kwargs})


def test_labels_come_from_the_file_names_and_the_split_is_stratified_and_seeded(tmp_path):
    root = write_flat_folder(tmp_path / "train", {"cat": 20, "dog": 10})
    data = module(root, val_fraction=0.2, split_seed=42)
    assert data.class_names == ["cat", "dog"] and data.found_layout == "file_prefix"
    data.setup("fit")
    dataset = data.train_set.dataset
    assert all(dataset.classes[label] == Path(path).name.split(".")[0] for path, label in dataset.samples)
    assert (len(data.train_set), len(data.val_set)) == (24, 6)
    val_labels = sorted(dataset.targets[i] for i in data.val_set.indices)
    assert val_labels == [0, 0, 0, 0, 1, 1]  # each class keeps its share: 4 of 20 cats, 2 of 10 dogs
    assert not set(data.train_set.indices) & set(data.val_set.indices)
    again, other = module(root, split_seed=42), module(root, split_seed=7)
    again.setup("fit")
    other.setup("fit")
    assert again.val_set.indices == data.val_set.indices != other.val_set.indices
    x, y = data.val_set[0]
    assert x.shape == (3, 16, 16) and y in (0, 1)


def test_the_layout_is_recognised_or_named(tmp_path, split_folder, class_folder):
    assert module(split_folder).found_layout == "train_val"
    assert module(class_folder).found_layout == "class_folders"
    flat = write_flat_folder(tmp_path / "flat", {"cat": 3, "dog": 3})
    assert module(flat, layout="file_prefix").class_names == ["cat", "dog"]
    # class folders with a stray picture beside them: ambiguous unless layout says which
    Image.new("RGB", (8, 8)).save(class_folder / "cover.png")
    with pytest.raises(UserError, match="both folders and image files.*--data.layout class_folders"):
        module(class_folder).class_names
    assert module(class_folder, layout="class_folders").class_names == ["circle", "square", "triangle"]


def test_unlabelled_files_and_a_wrong_layout_are_user_errors(tmp_path):
    flat = write_flat_folder(tmp_path / "flat", {"cat": 3, "dog": 3})
    Image.new("RGB", (8, 8)).save(flat / "1.jpg")  # Kaggle's test1/ names
    with pytest.raises(
        UserError, match=r"1 of 7 image files .* are not named <class>\.<n>\.<ext> \(1\.jpg\).*predict_root"
    ):
        module(flat).class_names
    with pytest.raises(UserError, match="has no train/ folder"):
        module(flat, layout="train_val").class_names
    with pytest.raises(UserError, match="no class folders"):
        module(flat, layout="class_folders").class_names


def test_unreadable_files_are_listed_and_skipped(run_cli, tmp_path):
    flat = write_flat_folder(tmp_path / "flat", {"cat": 8, "dog": 8})
    (flat / "cat.999.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (flat / "dog.998.jpg").write_bytes(b"")
    cli = run_cli(
        *catsdogs_resnet18_args(
            flat, tmp_path / "run", "--trainer.max_epochs", "1", "--last_checkpoint.save_top_k", "0"
        )
    )
    assert cli.trainer.global_step == 2  # 16 readable: 2 of each class to val, 12 to train, batches of 8
    listed = (Path(cli.trainer.log_dir) / SKIPPED_IMAGES_FILE).read_text()
    assert "cat.999.jpg" in listed and "dog.998.jpg\tempty file" in listed
    assert len(cli.datamodule.train_set) + len(cli.datamodule.val_set) == 16


@pytest.mark.skipif(not (KAGGLE / "train").is_dir(), reason="needs dogs_vs_cats_kaggle_subset in the real-data folder")
def test_the_task_on_the_kaggle_subset_fits_and_predicts_every_test_image(run_cli, tmp_path):
    """ResNet50 from the task config (random init, 32 px, two training batches) on the real flat
    ``train/``, then ``predict`` over all of ``test1/`` from the checkpoint alone: no data folder and
    no weights file at prediction time (the one trained from is deleted first)."""
    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    run = tmp_path / "run"
    cli = run_cli(
        "fit",
        "--config",
        CATSDOGS_CONFIG,
        "--model.weights",
        str(weights),
        *image_folder_args(KAGGLE / "train", 32, 36, num_workers=2),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",  # "1" would mean 1.0: all
        *quiet_run_args(run),
        "--checkpoint.save_top_k",
        "0",
    )
    assert cli.datamodule.found_layout == "file_prefix" and cli.model.class_names == ["cat", "dog"]
    assert (len(cli.datamodule.train_set), len(cli.datamodule.val_set)) == (1602, 400)
    assert cli.model.net.get_classifier().weight.shape == (2, 2048)
    assert [g["name"] for g in cli.trainer.optimizers[0].param_groups] == ["early", "layer4", "head"]
    assert cli.trainer.global_step == 2
    weights.unlink()

    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    out = tmp_path / "predict"
    run_cli(*predict_args(last, KAGGLE / "test1", out, "--data.num_workers", "2"))
    rows = list(csv.DictReader(written(out, "predictions-*.csv")[0].open()))
    assert len(rows) == len(list((KAGGLE / "test1").glob("*.jpg"))) == 1001
    assert {r["class_name"] for r in rows} <= {"cat", "dog"}
    assert all(0.5 <= float(r["probability"]) <= 1.0 for r in rows)
    assert len({r["path"] for r in rows}) == 1001
