"""MNIST and Fashion-MNIST on torchvision's data sets: 28x28 gray images of 10 classes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from torch import nn
from torchvision.datasets import MNIST, FashionMNIST

from lit_transfer.data.arrays import ArrayDataModule
from lit_transfer.data.presets import Augment
from lit_transfer.errors import UserError, require
from lit_transfer.preprocessing import Preprocessing

# torchvision's class, the set's name, and the mean and std of its training images' 0..1 pixels.
_DATASETS: dict[str, tuple[type[MNIST], str, float, float]] = {
    "mnist": (MNIST, "MNIST", 0.1307, 0.3081),
    "fashion_mnist": (FashionMNIST, "Fashion-MNIST", 0.2860, 0.3530),
}
IMAGE_SIZE = 28


class MNISTDataModule(ArrayDataModule):
    """MNIST or Fashion-MNIST in torchvision's layout: ``root/MNIST/raw/`` (or ``root/FashionMNIST/raw/``)
    holding the four unzipped files (``train-images-idx3-ubyte``, ...), downloaded there when
    ``download`` is true.

    The images are gray (1 channel): a net that takes 1 channel (``LeNet``) gets them so, a net built for
    RGB gets the channel repeated into 3 (said once at the start). ``val_size`` training images (a
    split fixed by ``split_seed``) validate; with ``val_size: 0`` the test set validates, as the
    tutorials do (``lit_transfer.data.arrays``).

    Args:
        root: folder that holds ``MNIST/`` (or ``FashionMNIST/``), and where ``download`` puts it.
        dataset: ``mnist`` (handwritten digits) or ``fashion_mnist`` (Zalando's clothes), 10 classes each.
        download: when the data set is missing under ``root``, download torchvision's files (checked
            against their MD5 checksums) and unzip them there.
        val_size: number of training images held out for validation; 0: validate on the test set.
        split_seed: seed of the train/val split; the same seed gives the same split.
        image_size: side the 28x28 images are resized to (e.g. 224 for AlexNet, 96 for GoogLeNet, as
            the d2l tutorials do); null: what the net expects, else 28.
        batch_size: training images per batch (per device).
        eval_batch_size: images per batch for validation, test and predict; null: ``batch_size``.
        num_workers: DataLoader worker processes; 0 loads in the main process. Lowered to the
            number of CPUs this process may use.
        mean: mean of the 0..1 pixel values (one value; three for a net that takes RGB with its own),
            subtracted from every batch; null: what the net expects, else the set's own.
        std: standard deviation the batches are divided by; null: what the net expects, else the set's own.
        augment: training augmentation: ``none`` (the tutorials'), ``crop_flip`` (random crop with 4 px
            padding + flip: a mirrored digit is another glyph, so rather for the clothes),
            ``imagenet`` or ``flip``.
        augmentations: torchvision.transforms.v2 transforms applied to the training images after the
            ``augment`` preset (e.g. ``RandomAffine``); null: none.
        balanced_sampling: draw each training epoch's images with replacement, every class as likely
            as any other, from the seed and the epoch alone.
        predict_root: image file or folder of images (searched recursively) to predict, made gray and
            resized to the image size; the class names then come from the checkpoint.
    """

    image_channels = 1

    def __init__(
        self,
        root: str = "data",
        dataset: Literal["mnist", "fashion_mnist"] = "mnist",
        download: bool = False,
        val_size: int = 5000,
        split_seed: int = 42,
        image_size: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = 256,
        num_workers: int = 2,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: Augment = "none",
        augmentations: list[nn.Module] | None = None,
        balanced_sampling: bool = False,
        predict_root: str | None = None,
    ) -> None:
        if dataset not in _DATASETS:
            raise UserError(f"unknown data.dataset {dataset!r}: expected one of {', '.join(_DATASETS)}")
        require(image_size is None or image_size >= 1, f"data.image_size is {image_size}: give 1 or more pixels")
        self.dataset_class, self.dataset_title, mean_of_set, std_of_set = _DATASETS[dataset]
        given = Preprocessing(image_size, image_size, mean=mean, std=std, source="the data settings")
        self.default_preprocessing = Preprocessing(
            IMAGE_SIZE,
            IMAGE_SIZE,
            interpolation="bilinear",
            mean=(mean_of_set,),
            std=(std_of_set,),
            source=f"{self.dataset_title}'s own values",
        )
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

    @property
    def folder(self) -> Path:
        return Path(self.root).expanduser() / self.dataset_class.__name__ / "raw"

    def _files(self) -> list[Path]:
        return [self.folder / Path(url).name.removesuffix(".gz") for url, _ in self.dataset_class.resources]

    def is_present(self) -> bool:
        return all(path.is_file() for path in self._files())

    def download_files(self) -> None:
        self.dataset_class(str(Path(self.root).expanduser()), train=True, download=True)

    def load(self, train: bool) -> MNIST:
        return self.dataset_class(str(Path(self.root).expanduser()), train=train)

    @property
    def class_names(self) -> list[str] | None:
        # Known without reading a file: torchvision lists them on the class.
        return None if self.predict_root else list(self.dataset_class.classes)
