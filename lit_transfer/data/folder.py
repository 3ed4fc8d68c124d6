"""An ImageFolder data module for any class-per-folder data set, and for Kaggle's flat
``cat.123.jpg`` layout."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import Subset
from torchvision.datasets import DatasetFolder, ImageFolder

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.data.download import archive_for, download_and_unpack
from lit_transfer.data.images import image_loader, is_image_file
from lit_transfer.data.presets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    ClassificationPresetEval,
    ClassificationPresetTrain,
)
from lit_transfer.data.scan import find_bad_images, list_image_files
from lit_transfer.errors import UserError, first_line, require, some
from lit_transfer.preprocessing import Interpolation, Preprocessing

SKIPPED_IMAGES_FILE = "skipped_images.txt"

# train_val: root/train + root/val (+ root/test); class_folders: root/<class>/<images>;
# file_prefix: root/<class>.<anything>.<ext> (Kaggle dogs vs cats: cat.0.jpg, dog.17.jpg).
Layout = Literal["auto", "train_val", "class_folders", "file_prefix"]

# <class>.<anything>.<extension>: the label is everything before the first dot.
_PREFIX_NAMED = re.compile(r"^(?P<label>[^.]+)\..+\.[^.]+$")


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


def detect_layout(root: Path) -> Layout:
    """The layout of ``root``: ``train/`` inside, else image files inside (``file_prefix``), else folders."""
    if (root / "train").is_dir():
        return "train_val"
    entries = list(root.iterdir())
    has_folders = any(e.is_dir() and not e.name.startswith(".") for e in entries)
    has_images = any(e.is_file() and is_image_file(e) for e in entries)
    if has_images and has_folders:
        raise UserError(
            f"{str(root)!r} holds both folders and image files: set --data.layout class_folders (the folders are "
            "the classes) or --data.layout file_prefix (the files are named <class>.<n>.jpg)"
        )
    return "file_prefix" if has_images else "class_folders"


def prefix_named_files(folder: Path) -> list[str]:
    """The image files directly in ``folder``, all named ``<class>.<anything>.<ext>`` (sorted paths, made
    as ``list_image_files`` makes them); a file named otherwise has no label, which is a user error."""
    names = sorted(
        name for name in os.listdir(folder) if is_image_file(name) and os.path.isfile(os.path.join(folder, name))
    )
    if not names:
        raise UserError(f"{str(folder)!r} holds no image files: expected files named <class>.<n>.jpg, or class folders")
    unlabelled = [name for name in names if not _PREFIX_NAMED.match(name)]
    if unlabelled:
        shown = some(unlabelled, limit=3)
        raise UserError(
            f"{len(unlabelled)} of {len(names)} image files in {str(folder)!r} are not named <class>.<n>.<ext> ({shown}), "
            "so their class is unknown: rename or move them (unlabelled images are for predict: --data.predict_root)"
        )
    return [os.path.join(str(folder), name) for name in names]


def prefix_label(path: str) -> str:
    match = _PREFIX_NAMED.match(os.path.basename(path))
    assert match is not None, path
    return match["label"]


class PrefixNamedFiles(DatasetFolder):
    """One folder of images labelled by their file names' prefix, ``cat.0.jpg`` -> ``cat`` (Kaggle's
    dogs vs cats); torchvision's ``DatasetFolder`` with the classes and samples taken from the names."""

    def __init__(self, root: Path, transform, skip: frozenset[str] = frozenset()) -> None:
        super().__init__(
            str(root), loader=image_loader(transform), transform=transform, is_valid_file=lambda p: p not in skip
        )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        names = sorted({prefix_label(path) for path in prefix_named_files(Path(directory))})
        return names, {name: i for i, name in enumerate(names)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        samples = [
            (path, class_to_idx[prefix_label(path)])
            for path in prefix_named_files(Path(directory))
            if is_valid_file is None or is_valid_file(path)
        ]
        if not samples:
            raise FileNotFoundError("Found no valid file")
        return samples


class ClassFolders(ImageFolder):
    """``ImageFolder`` whose classes are ``class_folders`` (torchvision's own would also count hidden
    folders such as ``.ipynb_checkpoints``, shifting every label) and that leaves out ``skip``."""

    def __init__(self, root: Path, transform, skip: frozenset[str] = frozenset()) -> None:
        super().__init__(
            str(root),
            transform=transform,
            loader=image_loader(transform),
            is_valid_file=lambda p: is_image_file(p) and p not in skip,
        )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        names = class_folders(Path(directory))
        return names, {name: i for i, name in enumerate(names)}


class ImageFolderDataModule(ClassificationDataModule):
    """Class-per-folder images, or one folder of images named by class.

    Layouts (``layout``; ``auto`` recognises them): ``train_val``: ``root/train`` + ``root/val`` (+
    optional ``root/test``) of class folders, as in hymenoptera; ``class_folders``: ``root`` itself
    holding the class folders; ``file_prefix``: ``root`` holding the images, each named
    ``<class>.<anything>.<ext>`` (Kaggle's dogs vs cats ``train/``: ``cat.0.jpg``, ``dog.17.jpg``).
    The last two are split into train/val by a stratified, seeded ``val_fraction``.
    Without a test folder, ``test`` uses the validation images; without a val folder (CIFAR-style
    ``train/`` + ``test/``), validation uses the test images.

    Every image is read as 3-channel RGB. Before training, every file is decoded once (``scan``);
    unreadable ones are left out, counted in a warning and listed in ``skipped_images.txt`` in the
    run's log folder. With ``download``, a missing ``root`` is downloaded (``archive_url`` with its
    ``archive_sha256`` or ``archive_md5``, or ``archive_unverified: true`` to skip the check; or the
    known archive of root's folder name, e.g. ``hymenoptera_data``) and unpacked there.

    Args:
        root: the data set's folder, organised as ``layout`` says; may be null only when predicting
            (``predict_root``), where the class names come from the checkpoint.
        batch_size: training images per batch (per device).
        num_workers: DataLoader worker processes; 0 loads in the main process. Lowered to the
            number of CPUs this process may use.
        eval_batch_size: images per batch for validation, test and predict; null: ``batch_size``.
        image_size: side in pixels of the square images the net gets (the training crop and the
            evaluation center crop); null: what the net's weights expect (``lit_transfer.preprocessing``),
            else 224.
        resize_size: short side in pixels an image is resized to before the center crop of
            ``image_size`` (evaluation, and training with ``augment`` flip or none); null: what the
            weights expect when ``image_size`` is null too (232 for ResNet50's ``IMAGENET1K_V2``), else
            ``image_size / 0.875`` (256 for 224), or ``image_size`` for flip's training images.
        interpolation: how images are resized: ``bilinear``, ``bicubic`` or ``nearest``; null: what
            the weights expect, else bilinear.
        mean: per-channel (R, G, B) mean of the 0..1 pixel values, subtracted from every batch;
            null: what the weights expect, else ImageNet's.
        std: per-channel (R, G, B) standard deviation the batches are divided by; null: what the
            weights expect, else ImageNet's.
        augment: training augmentation: ``imagenet`` (random resized crop + flip), ``crop_flip``
            (random crop with 4 px padding + flip), ``flip`` (resize, center crop + flip) or ``none``
            (the evaluation transform, which the model's ``feature_cache`` needs).
        augmentations: torchvision.transforms.v2 transforms applied to the training images after the
            ``augment`` preset, each ``{class_path: torchvision.transforms.v2.RandAugment, init_args:
            {...}}`` (RandAugment, TrivialAugmentWide, AutoAugment, ColorJitter, RandomErasing, any
            transform that takes a uint8 image); null: none.
        balanced_sampling: draw each training epoch's images with replacement, every class as likely
            as any other (for a class with few images), from the seed and the epoch alone.
        val_fraction: share of each class's images held out for validation (layouts without a
            ``val/`` folder: ``class_folders``, ``file_prefix``); between 0 and 1.
        split_seed: seed of that train/val split; the same seed gives the same split.
        predict_root: image file or folder of images (searched recursively) to predict; the class
            names then come from the checkpoint and ``root`` is not read.
        scan: decode every image once before training and leave out unreadable ones (warned about,
            listed in ``skipped_images.txt``); false skips the check and an unreadable file fails the
            run when it is loaded.
        download: when ``root`` does not exist, download and unpack its archive there
            (``archive_url``, or the known archive of root's folder name, e.g. ``hymenoptera_data``).
        archive_url: URL of the zip or tar archive to download with ``download``; needs
            ``archive_sha256`` or ``archive_md5``, or ``archive_unverified: true``.
        archive_md5: expected MD5 checksum (hex) of the downloaded archive; a mismatch stops the run.
        archive_sha256: expected SHA-256 checksum (hex) of the downloaded archive; a mismatch stops the run.
        archive_unverified: use ``archive_url``'s download without checking a checksum.
        layout: how ``root`` holds the images: ``auto`` (recognised: ``train/`` inside means
            ``train_val``, image files ``file_prefix``, else ``class_folders``), ``train_val``,
            ``class_folders`` or ``file_prefix`` (see above).
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        eval_batch_size: int | None = None,
        image_size: int | None = None,
        resize_size: int | None = None,
        interpolation: Interpolation | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: Augment = "imagenet",
        augmentations: list[nn.Module] | None = None,
        balanced_sampling: bool = False,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        predict_root: str | None = None,
        scan: bool = True,
        download: bool = False,
        archive_url: str | None = None,
        archive_md5: str | None = None,
        archive_sha256: str | None = None,
        archive_unverified: bool = False,
        layout: Layout = "auto",
    ) -> None:
        given = Preprocessing(image_size, resize_size, interpolation, mean, std, source="the data settings")
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
        self.save_hyperparameters()
        require(0 < val_fraction < 1, f"data.val_fraction is {val_fraction}: give a share between 0 and 1, e.g. 0.2")
        self.scan = scan
        self.download = download
        self.archive_url, self.archive_md5, self.archive_sha256 = archive_url, archive_md5, archive_sha256
        self.archive_unverified = archive_unverified
        self._scanned: dict[Path, frozenset[str]] = {}
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.layout = layout
        self._layout: Layout | None = None  # what root turned out to be, set with _folders

    # -- layout -------------------------------------------------------------------------------
    @property
    def found_layout(self) -> Layout | None:
        """The layout of ``root`` (``layout``, or what ``auto`` found); None when predicting."""
        return None if self._folders is None else self._layout

    @cached_property
    def _folders(self) -> dict[str, Path] | None:
        """``train``/``val``/``test`` folders, or ``{"all": root}`` for a single folder of classes or
        of prefix-named files."""
        if self.predict_root:  # predicting: the class names come from the checkpoint
            return None
        if self.root is None:
            raise UserError("no data folder: set data.root (--data.root <folder>) in the config or on the command line")
        root = Path(self.root).expanduser()
        if not root.is_dir() and self.download:
            archive = archive_for(
                root, self.archive_url, self.archive_md5, self.archive_sha256, self.archive_unverified
            )
            download_and_unpack(archive, root)
        if root.is_file():
            raise UserError(f"data.root {str(root)!r} is a file, not a folder: give the folder that holds the images")
        if not root.is_dir():
            raise UserError(f"data folder {str(root)!r} does not exist: check --data.root (now {self.root!r})")
        self._layout = detect_layout(root) if self.layout == "auto" else self.layout
        if self._layout == "train_val":
            if not (root / "train").is_dir():
                raise UserError(
                    f"{str(root)!r} has no train/ folder: set --data.layout auto, or point root at the folder holding train/"
                )
            folders = {split: root / split for split in ("train", "val", "test") if (root / split).is_dir()}
            if "val" not in folders and "test" in folders:
                # CIFAR-style train/ + test/: validate on test/, as the CIFAR tutorial does.
                folders["val"] = folders["test"]
            if "val" not in folders:
                raise UserError(
                    f"{str(root)!r} has train/ but no val/: add val/, or point root at the class folders or the "
                    "folder of <class>.<n>.jpg files (split by val_fraction)"
                )
            return folders
        return {"all": root}

    @cached_property
    def class_names(self) -> list[str] | None:
        folders = self._folders
        if folders is None:
            return None
        first, *others = folders.items()
        names = self._classes_in(first[1])
        for split, folder in others:
            other = self._classes_in(folder)
            if other != names:
                raise UserError(
                    f"class folders differ between {first[0]}/ {names} and {split}/ {other}: "
                    "every split needs the same class folders"
                )
        return names

    # -- transforms ---------------------------------------------------------------------------
    default_preprocessing = Preprocessing(
        image_size=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, source="ImageNet's defaults"
    )

    def train_transform(self):
        p = self.preprocessing
        return ClassificationPresetTrain(
            p.image_size,
            p.resize_size,
            self.augment,
            interpolation=p.interpolation,
            augmentations=self.augmentations,
            channels=self.channels,
        )

    def eval_transform(self):
        p = self.preprocessing
        return ClassificationPresetEval(p.image_size, p.resize_size, p.interpolation, self.channels)

    def _classes_in(self, folder: Path) -> list[str]:
        if self._layout == "file_prefix":
            return sorted({prefix_label(path) for path in prefix_named_files(folder)})
        return class_folders(folder)

    def _image_files(self, folder: Path) -> list[str]:
        if self._layout == "file_prefix":
            return prefix_named_files(folder)
        return [f for name in self.class_names or [] for f in list_image_files(folder / name)]

    def _image_folder(self, folder: Path, transform) -> DatasetFolder:
        dataset_class = PrefixNamedFiles if self._layout == "file_prefix" else ClassFolders
        try:
            return dataset_class(folder, transform, skip=self._bad_files(folder))
        except FileNotFoundError as err:  # a class folder whose every file is unreadable
            raise UserError(
                f"{first_line(err).rstrip('.')} in {str(folder)!r}: every image there is unreadable (see the warning above)"
            ) from err

    # -- unreadable files ---------------------------------------------------------------------
    def _bad_files(self, folder: Path) -> frozenset[str]:
        """The unreadable files of ``folder``, found once per run (setup runs for fit and test)."""
        if not self.scan:
            return frozenset()
        if folder not in self._scanned:
            bad = find_bad_images(self._image_files(folder))
            self._scanned[folder] = frozenset(path for path, _ in bad)
            if bad:
                self.skipped += bad
                self._list_skipped(bad, folder)
        return self._scanned[folder]

    def _list_skipped(self, bad: list[tuple[str, str]], folder: Path) -> None:
        """Report the files the scan left out and list them in the run folder."""
        listing = None
        if self.trainer is not None:
            # every rank asks: Trainer.log_dir is a collective call (a broadcast from rank 0)
            listing = Path(self.trainer.log_dir or self.trainer.default_root_dir) / SKIPPED_IMAGES_FILE
            if self.trainer.is_global_zero:
                listing.parent.mkdir(parents=True, exist_ok=True)
                with open(listing, "a") as f:  # appended: train, val and test are scanned one by one
                    f.writelines(f"{path}\t{reason}\n" for path, reason in bad)
        self._report_skipped(bad, folder, listing)

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
            if stage == "test":
                rank_zero_info(
                    f"no test/ folder in {str(folders['all'])!r}: testing on the validation split (val_fraction)"
                )
            return
        self.train_set = self._image_folder(folders["train"], self.train_transform())
        self.val_set = self._image_folder(folders["val"], self.eval_transform())
        self.test_set = (
            self._image_folder(folders["test"], self.eval_transform()) if "test" in folders else self.val_set
        )
        if stage == "test" and "test" not in folders:
            rank_zero_info(
                f"no test/ folder in {str(folders['val'].parent)!r}: testing on the validation images (val/)"
            )
