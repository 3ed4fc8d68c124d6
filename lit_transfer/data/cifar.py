"""CIFAR-10 and CIFAR-100 on torchvision's data sets, with the tutorial's transforms and batch sizes."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

from torch import nn
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets import cifar as torchvision_cifar
from torchvision.datasets.utils import download_and_extract_archive

from lit_transfer.data.arrays import ArrayDataModule
from lit_transfer.data.presets import CIFAR_MEAN, CIFAR_STD, Augment
from lit_transfer.errors import UserError
from lit_transfer.preprocessing import Preprocessing

_DATASETS: dict[str, tuple[type[CIFAR10], str]] = {
    "cifar10": (CIFAR10, "CIFAR-10"),
    "cifar100": (CIFAR100, "CIFAR-100"),
}

IMAGE_SIZE = 32


class CIFARDataModule(ArrayDataModule):
    """CIFAR-10 or CIFAR-100 in torchvision's layout: ``root/cifar-10-batches-py/`` (or
    ``root/cifar-100-python/``), downloaded there when ``download`` is true.

    ``val_size`` training images (a split fixed by ``split_seed``) validate the model; with
    ``val_size: 0`` the test set validates, as the tutorial does. ``test`` always uses the test set
    (``lit_transfer.data.arrays``).

    Args:
        root: folder that holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``), and where
            ``download`` puts it.
        dataset: ``cifar10`` (10 classes) or ``cifar100`` (100 classes).
        download: when the data set is missing under ``root``, download torchvision's archive
            (checked against its MD5 checksum) and extract it there.
        val_size: number of training images held out for validation; 0: validate on the test set.
        split_seed: seed of the train/val split; the same seed gives the same split.
        batch_size: training images per batch (per device).
        eval_batch_size: images per batch for validation, test and predict; null: ``batch_size``.
        num_workers: DataLoader worker processes; 0 loads in the main process. Lowered to the
            number of CPUs this process may use.
        mean: per-channel (R, G, B) mean of the 0..1 pixel values, subtracted from every batch;
            null: what the net's pretrained weights expect (``lit_transfer.preprocessing``), else the CIFAR-10
            tutorial's. The images stay 32x32 whatever the weights were trained at.
        std: per-channel (R, G, B) standard deviation the batches are divided by; null: what the
            weights expect, else the CIFAR-10 tutorial's.
        augment: training augmentation of the 32x32 images: ``crop_flip`` (random crop with 4 px
            padding + flip, the tutorial's), ``imagenet`` (random resized crop + flip), ``flip``
            (flip only) or ``none`` (no augmentation, which the model's ``feature_cache`` needs).
        augmentations: torchvision.transforms.v2 transforms applied to the training images after the
            ``augment`` preset, each ``{class_path: torchvision.transforms.v2.RandAugment, init_args:
            {...}}`` (RandAugment, TrivialAugmentWide, AutoAugment, ColorJitter, RandomErasing, any
            transform that takes a uint8 image); null: none.
        balanced_sampling: draw each training epoch's images with replacement, every class as likely
            as any other (for a class with few images), from the seed and the epoch alone.
        predict_root: image file or folder of images (searched recursively) to predict, resized and
            center-cropped to 32x32; the class names then come from the checkpoint.
    """

    def __init__(
        self,
        root: str = "data",
        dataset: Literal["cifar10", "cifar100"] = "cifar10",
        download: bool = False,
        val_size: int = 5000,
        split_seed: int = 42,
        batch_size: int = 128,
        eval_batch_size: int | None = 100,
        num_workers: int = 2,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: Augment = "crop_flip",
        augmentations: list[nn.Module] | None = None,
        balanced_sampling: bool = False,
        predict_root: str | None = None,
    ) -> None:
        # The images stay 32x32 whatever the net expects; mean and std may follow its weights.
        given = Preprocessing(IMAGE_SIZE, IMAGE_SIZE, mean=mean, std=std, source="the data settings")
        if dataset not in _DATASETS:
            raise UserError(f"unknown data.dataset {dataset!r}: expected one of {', '.join(_DATASETS)}")
        self.dataset_class, self.dataset_title = _DATASETS[dataset]
        super().__init__(
            root,
            download,
            val_size,
            split_seed,
            batch_size,
            eval_batch_size,
            num_workers,
            given,
            augment,
            augmentations,
            balanced_sampling,
            predict_root,
        )
        self.save_hyperparameters()

    # -- files --------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return Path(self.root).expanduser() / self.dataset_class.base_folder

    def is_present(self) -> bool:
        return (self.folder / self.dataset_class.meta["filename"]).is_file()

    def download_files(self) -> None:
        cls = self.dataset_class
        download_and_extract_archive(cls.url, str(Path(self.root).expanduser()), filename=cls.filename, md5=cls.tgz_md5)

    def load(self, train: bool) -> CIFAR10:
        return self.dataset_class(str(Path(self.root).expanduser()), train=train)

    @cached_property
    def class_names(self) -> list[str] | None:
        # Read from the small meta file only: the CLI asks for the names before any image is needed.
        if self.predict_root:  # predicting: the class names come from the checkpoint
            return None
        self.ensure_present()
        meta = self.dataset_class.meta
        path = self.folder / meta["filename"]
        refetch = f"delete {str(self.folder)!r} and set download: true to fetch it again"
        # The file is a pickle: unpickled only once its MD5 is the published one, as torchvision does.
        if not torchvision_cifar.check_integrity(str(path), meta["md5"]):
            raise UserError(
                f"{str(path)!r} is not {self.dataset_title}'s class list (its MD5 checksum differs): {refetch}"
            )
        try:
            with open(path, "rb") as f:
                return list(pickle.load(f, encoding="latin1")[meta["key"]])
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as err:
            raise UserError(
                f"{str(path)!r} is not {self.dataset_title}'s class list ({type(err).__name__}): {refetch}"
            ) from err

    # -- transforms ---------------------------------------------------------------------------
    default_preprocessing = Preprocessing(
        interpolation="bilinear", mean=CIFAR_MEAN, std=CIFAR_STD, source="the CIFAR-10 tutorial's values"
    )
