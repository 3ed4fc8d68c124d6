"""An ImageFolder data module for any class-per-folder data set."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Subset
from torchvision.datasets import ImageFolder

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.data.images import is_image_file, load_rgb
from lit_transfer.data.presets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    ClassificationPresetEval,
    ClassificationPresetTrain,
)
from lit_transfer.errors import UserError


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a seeded split that keeps each class's share (at least one val image per class of 2+)."""
    generator = torch.Generator().manual_seed(seed)
    targets_t = torch.as_tensor(list(targets))
    train, val = [], []
    for label in targets_t.unique().tolist():
        idx = torch.nonzero(targets_t == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)].tolist()
        n_val = round(len(idx) * val_fraction)
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def class_folders(folder: Path) -> list[str]:
    """Sorted class folder names of ``folder``; an empty class folder is a user error."""
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise UserError(f"{str(folder)!r} has no class folders: expected <class_name>/<image files> inside it")
    for name in names:
        if not any(is_image_file(p) for p in (folder / name).rglob("*") if p.is_file()):
            raise UserError(f"class folder {str(folder / name)!r} holds no image files: add images or remove it")
    return names


class ImageFolderDataModule(ClassificationDataModule):
    """Class-per-folder images.

    Layouts: ``root/train`` + ``root/val`` (+ optional ``root/test``), as in hymenoptera; or ``root``
    itself holding the class folders, split into train/val by a stratified, seeded ``val_fraction``.
    Without a test folder, ``test`` uses the validation images; without a val folder (CIFAR-style
    ``train/`` + ``test/``), validation uses the test images.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        eval_batch_size: int | None = None,
        image_size: int = 224,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augment = "imagenet",
        val_fraction: float = 0.2,
        split_seed: int = 42,
        predict_root: str | None = None,
    ) -> None:
        super().__init__(root, batch_size, num_workers, eval_batch_size, predict_root)
        self.save_hyperparameters()
        self.image_size = image_size
        self.resize_size = resize_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    # -- layout -------------------------------------------------------------------------------
    @cached_property
    def _folders(self) -> dict[str, Path] | None:
        """``train``/``val``/``test`` folders, or ``{"all": root}`` for a single folder of classes."""
        if self.predict_root:  # predicting: the class names come from the checkpoint
            return None
        if self.root is None:
            raise UserError("no data folder: set data.root (--data.root <folder>) in the config or on the command line")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UserError(f"data folder {str(root)!r} does not exist: check --data.root (now {self.root!r})")
        if (root / "train").is_dir():
            folders = {split: root / split for split in ("train", "val", "test") if (root / split).is_dir()}
            if "val" not in folders and "test" in folders:
                # CIFAR-style train/ + test/: validate on test/, as the CIFAR tutorial does.
                folders["val"] = folders["test"]
            if "val" not in folders:
                raise UserError(f"{str(root)!r} has train/ but no val/: add val/ or point root at the class folders")
            return folders
        return {"all": root}

    @cached_property
    def class_names(self) -> list[str] | None:
        folders = self._folders
        if folders is None:
            return None
        first, *others = folders.items()
        names = class_folders(first[1])
        for split, folder in others:
            other = class_folders(folder)
            if other != names:
                raise UserError(
                    f"class folders differ between {first[0]}/ {names} and {split}/ {other}: "
                    "every split needs the same class folders"
                )
        return names

    # -- transforms ---------------------------------------------------------------------------
    def train_transform(self):
        return ClassificationPresetTrain(self.image_size, self.resize_size, self.mean, self.std, self.augment)

    def eval_transform(self):
        return ClassificationPresetEval(self.image_size, self.resize_size, self.mean, self.std)

    def _image_folder(self, folder: Path, transform) -> ImageFolder:
        return ImageFolder(str(folder), transform=transform, loader=load_rgb, is_valid_file=is_image_file)

    # -- datasets -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "predict":
            return
        folders = self._folders
        assert folders is not None and self.class_names is not None
        if "all" in folders:
            train_all = self._image_folder(folders["all"], self.train_transform())
            eval_all = self._image_folder(folders["all"], self.eval_transform())
            train_idx, val_idx = stratified_split(train_all.targets, self.val_fraction, self.split_seed)
            self.train_set, self.val_set = Subset(train_all, train_idx), Subset(eval_all, val_idx)
            self.test_set = self.val_set
            return
        self.train_set = self._image_folder(folders["train"], self.train_transform())
        self.val_set = self._image_folder(folders["val"], self.eval_transform())
        self.test_set = self._image_folder(folders["test"], self.eval_transform()) if "test" in folders else self.val_set

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        return self._loader(self.test_set)
