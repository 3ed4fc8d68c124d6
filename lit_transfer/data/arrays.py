"""The data sets torchvision holds whole in memory, as arrays (CIFAR, MNIST): what their data modules
share. Each has a training and a test set under ``root`` in torchvision's layout, downloaded there on
request; ``val_size`` training images (a split fixed by ``split_seed``) validate, or, with
``val_size: 0``, the test set does (as the tutorials do); ``test`` always uses the test set."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn
from torch.utils.data import Dataset

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.data.presets import Augment, ClassificationPresetEval, ClassificationPresetTrain
from lit_transfer.errors import UserError, require
from lit_transfer.preprocessing import Preprocessing


class ArrayImages(Dataset):
    """Images ``indices`` of a torchvision set held as an array, with their own transform, so the train
    and validation splits share one copy of the training images but not the augmentation.

    Images go to the transform as uint8 CHW tensors straight from the array (CIFAR's N x H x W x C
    numpy array, MNIST's N x H x W tensor), not as the PIL images torchvision's ``__getitem__`` makes:
    the presets are about 3x faster on tensors (40 vs 120 us per training image), which matters when
    DataLoader workers share the CPU with the net.
    """

    def __init__(self, dataset: Any, indices: Sequence[int] | None, transform) -> None:
        self.images = dataset.data
        self.indices = list(range(len(self.images)) if indices is None else indices)
        self.targets = [int(dataset.targets[i]) for i in self.indices]  # of these items, as ImageFolder's
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image = torch.as_tensor(self.images[self.indices[index]])
        image = image.unsqueeze(0) if image.dim() == 2 else image.permute(2, 0, 1).contiguous()
        return self.transform(image), self.targets[index]


class ArrayDataModule(ClassificationDataModule):
    """Base of the data modules over one of torchvision's in-memory sets (see the module's docstring).

    Subclasses give ``dataset_title``, ``folder`` (where the set's files are), ``is_present()``,
    ``download_files()``, ``load(train)`` (the torchvision data set) and ``class_names``.
    """

    dataset_title = ""

    def __init__(
        self,
        root: str,
        download: bool,
        val_size: int,
        split_seed: int,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        given: Preprocessing,
        augment: Augment,
        augmentations: list[nn.Module] | None,
        balanced_sampling: bool,
        predict_root: str | None,
    ) -> None:
        super().__init__(
            root,
            batch_size,
            num_workers,
            eval_batch_size,
            predict_root,
            given,
            augment,
            augmentations,
            balanced_sampling,
        )
        require(val_size >= 0, f"data.val_size is {val_size}: give 0 (validate on the test set) or a positive count")
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed

    # -- files --------------------------------------------------------------------------------
    @property
    @abstractmethod
    def folder(self) -> Path:
        """Where the set's files are under ``root``."""

    @abstractmethod
    def is_present(self) -> bool:
        """Whether the set's files are under ``root`` (checked cheaply: no image is read)."""

    @abstractmethod
    def download_files(self) -> None:
        """Download the set under ``root`` (checked against its published checksums)."""

    @abstractmethod
    def load(self, train: bool) -> Any:
        """torchvision's training (``train``) or test set, with ``data`` and ``targets``."""

    def ensure_present(self) -> None:
        """Download when allowed; otherwise a missing set is the user's to fix, said in one line."""
        if self.is_present():
            return
        if Path(self.root).expanduser().is_file():
            raise UserError(
                f"data.root {self.root!r} is a file, not a folder: give the folder that holds {self.folder.name}/"
            )
        if not self.download:
            raise UserError(
                f"{self.dataset_title} not found under root {self.root!r} (no {self.folder}): set download: true "
                f"(--data.download true) or point root at the folder that holds {self.folder.name}/"
            )
        try:
            self.download_files()
        except (URLError, OSError, RuntimeError) as err:
            reason = " ".join(str(err).split())  # torchvision's message spans lines
            raise UserError(
                f"cannot download {self.dataset_title} ({reason}): check the connection, or put its files in "
                f"{self.folder} yourself"
            ) from err

    def prepare_data(self) -> None:
        if not self.predict_root:
            self.ensure_present()

    def _load(self, train: bool) -> Any:
        try:
            return self.load(train)
        except RuntimeError as err:  # torchvision's own check failed: a partial download or other files
            raise UserError(
                f"{self.dataset_title} under {str(self.folder)!r} is incomplete or corrupted ({err}): "
                "delete that folder and set download: true to fetch it again"
            ) from err

    # -- transforms ---------------------------------------------------------------------------
    def train_transform(self):
        p = self.preprocessing
        return ClassificationPresetTrain(
            p.image_size, p.image_size, self.augment, augmentations=self.augmentations, channels=self.channels
        )

    def eval_transform(self):
        # Resize + center crop are no-ops on the set's own images but let predict take any image.
        p = self.preprocessing
        return ClassificationPresetEval(p.image_size, p.image_size, p.interpolation, self.channels)

    # -- datasets -----------------------------------------------------------------------------
    @cached_property
    def _train_images(self) -> Any:
        return self._load(train=True)

    def _split(self) -> tuple[list[int], list[int]]:
        """``(train, val)`` indices into the training set; the same for a given ``split_seed``."""
        n = len(self._train_images.data)
        if self.val_size >= n:
            raise UserError(f"data.val_size {self.val_size} leaves no training images (the training set has {n})")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        return sorted(order[self.val_size :]), sorted(order[: self.val_size])

    def setup(self, stage: str) -> None:
        if stage == "predict":
            return
        if stage == "test" or self.val_size == 0:
            self.test_set = ArrayImages(self._load(train=False), None, self.eval_transform())
        if stage in ("fit", "validate"):
            if self.val_size == 0:
                self.val_set = self.test_set
            else:
                self.val_set = ArrayImages(self._train_images, self._split()[1], self.eval_transform())
        if stage == "fit":
            self.train_set = ArrayImages(self._train_images, self._split()[0], self.train_transform())
