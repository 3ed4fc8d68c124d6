"""What every data module of lit_transfer offers the CLI and the model."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from lit_transfer.data.images import ImageFiles, list_images
from lit_transfer.data.presets import Augment
from lit_transfer.data.sampling import BalancedEpochSampler, EpochShuffleSampler, MixedOrderSampler
from lit_transfer.data.scan import find_bad_images
from lit_transfer.errors import UserError, require, some
from lit_transfer.preprocessing import Normalize, Preprocessing, check_given


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def labels_of(dataset: Dataset) -> list[int]:
    """The label of every item of a labelled dataset from its ``targets`` (torchvision's name, which
    every split of lit_transfer's data modules has), through ``Subset``s."""
    if isinstance(dataset, Subset):
        parent = labels_of(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):  # (features, labels): the feature cache's
        return dataset.tensors[1].tolist()
    return [int(t) for t in dataset.targets]


class ClassificationDataModule(LightningDataModule):
    """Base of the data modules, and the door through which the CLI, the model and fine-tuning
    (``lit_transfer.finetune``) use one. What they may use:

    - ``class_names`` / ``num_classes``: read when the CLI builds the model (linked to the model's
      ``class_names`` and ``num_classes``), so subclasses find their classes cheaply and raise a
      ``UserError`` for a missing or malformed folder before any training starts;
    - ``train_set``, ``val_set``, ``test_set``: the splits ``setup`` makes (labelled ``(image, label)``
      datasets). The loaders are made from them when Lightning asks, so a split replaced after
      ``setup`` (the feature cache's features) is what the loader serves;
    - ``augment``: the training augmentation preset (``presets.Augment``), and ``augmentations``,
      the transforms the config adds after it; ``randomly_augmented`` says whether the training
      images change from epoch to epoch;
    - ``preprocessing``: the evaluation resize and crop and the normalisation in use: what the config
      gives, else what ``follow`` was told the net expects, else the module's own defaults;
    - ``follow(preprocessing)``: take the net's expected input (``lit_transfer.preprocessing``) for what the
      config leaves unset; the CLI calls it before a run, before ``setup`` builds the transforms;
    - ``normalize`` (with ``mean``/``std``): what turns a batch of uint8 images, once on the model's
      device, into the net's input;
    - ``make_loader(dataset, train, mixed)``: a DataLoader over any dataset with this module's batch
      sizes and workers, in order, or in the seeded per-epoch shuffle of training (``train``; a
      class-balanced draw with ``balanced_sampling``), or in the fixed mixed order of validation and
      test (``mixed``);
    - ``skipped``: ``(path, reason)`` of every unreadable image file left out, at fit or at predict;
    - ``train_class_counts()``: the training split's images per class, read from the labels alone.

    Subclasses give ``class_names``, ``eval_transform`` and ``setup`` (which sets the splits).
    """

    def __init__(
        self,
        root: str | None,
        batch_size: int,
        num_workers: int,
        eval_batch_size: int | None,
        predict_root: str | None,
        given: Preprocessing,
        augment: Augment,
        augmentations: Sequence[nn.Module] | None = None,
        balanced_sampling: bool = False,
    ) -> None:
        super().__init__()
        check_given(given.image_size, given.resize_size, given.mean, given.std)
        eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            require(value >= 1, f"data.{key} is {value}: give at least 1")
        require(num_workers >= 0, f"data.num_workers is {num_workers}: give 0 (load in this process) or more")
        self._given = given
        self._followed: Preprocessing | None = None
        self.normalize = self._normalize()
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = min(num_workers, usable_cpus())
        if self.num_workers < num_workers:
            rank_zero_warn(
                f"data.num_workers {num_workers} lowered to {self.num_workers}, the CPUs this process may use "
                "(more worker processes only compete for them)"
            )
        self.predict_root = predict_root
        self.augment = augment
        self.augmentations = list(augmentations or [])
        self.balanced_sampling = balanced_sampling
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.skipped: list[tuple[str, str]] = []

    @property
    @abstractmethod
    def class_names(self) -> list[str] | None:
        """Class names in label order; None only when predicting without a data folder."""

    @property
    def num_classes(self) -> int | None:
        names = self.class_names
        return None if names is None else len(names)

    @abstractmethod
    def eval_transform(self):
        """The deterministic transform used for validation, test and predict."""

    def train_class_counts(self) -> list[int]:
        """Images per class in the training split (after ``setup("fit")``), without loading an image."""
        if self.train_set is None or self.class_names is None:
            raise RuntimeError("train_class_counts needs the training split: call setup('fit') first")
        counts = [0] * len(self.class_names)
        for label in labels_of(self.train_set):
            counts[label] += 1
        return counts

    @property
    def randomly_augmented(self) -> bool:
        """Whether a training image differs from epoch to epoch (a random preset or added transforms)."""
        return self.augment != "none" or bool(self.augmentations)

    #: What a subclass uses for anything neither its config nor the net says.
    default_preprocessing = Preprocessing()
    #: The channels of the images as the data set holds them (3: RGB, what image files decode to).
    image_channels = 3

    @property
    def channels(self) -> int:
        """The channels of the images the transforms give: what the net takes (``follow``), else RGB."""
        return self.preprocessing.channels or 3

    @property
    def preprocessing(self) -> Preprocessing:
        """What the config gives, else what the net expects (``follow``), else the module's defaults."""
        return self._given.or_else(self._followed).or_else(self.default_preprocessing)

    def follow(self, expected: Preprocessing | None) -> dict[str, Any]:
        """Use the input the net expects (``expected``) for every value the config leaves unset, and
        keep the values in use in the module's hyperparameters, so that a checkpoint holds them and
        predicting or evaluating from it prepares images as training did. Returns the values taken
        from ``expected`` (none where the config, or the checkpoint's settings, give them all).

        The two sizes go together: where the config gives either, the net's are not taken (its
        resize for 224 pixels means nothing for a config's 64)."""
        if expected is not None and (self._given.image_size or self._given.resize_size):
            expected = replace(expected, image_size=None, resize_size=None)
        self._followed = expected
        self.normalize = self._normalize()
        channels, sizes = self.channels, {len(self.normalize.mean), len(self.normalize.std)}
        if not sizes <= {1, channels} or len(sizes) > 1:
            raise UserError(
                f"the net takes {channels}-channel images and the mean and std in use have {len(self.normalize.mean)} "
                f"and {len(self.normalize.std)} values: give {channels} values or 1 for each (--data.mean, --data.std)"
            )
        if channels != self.image_channels:
            kind = {1: "gray", 3: "RGB"}
            rank_zero_info(
                f"images: {kind.get(self.image_channels, self.image_channels)} images given to the net as "
                f"{kind.get(channels, channels)} ({channels} channel{'s' if channels > 1 else ''}), as it takes"
            )
        self.hparams.update({key: value for key, value in self.preprocessing.values().items() if key in self.hparams})
        given = self._given.values()
        return {key: value for key, value in (expected.values() if expected else {}).items() if key not in given}

    def _normalize(self) -> Normalize:
        preprocessing = self.preprocessing
        return Normalize(preprocessing.mean, preprocessing.std)

    @property
    def mean(self) -> tuple[float, ...]:
        return self.normalize.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.normalize.std

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The loaders give uint8 images (presets.Normalize says why): here they become the net's input.
        if isinstance(batch, torch.Tensor):  # images alone: the model summary's example input
            return self._net_input(batch)
        images, *rest = batch
        return [self._net_input(images), *rest]

    def _net_input(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised, then in the dtype of the run's precision: Lightning casts a batch to it (``16-true``,
        ``bf16-true``) before this hook, when the images are still uint8 and its cast does nothing."""
        images = self.normalize(images)
        trainer = self.trainer
        return trainer.precision_plugin.convert_input(images) if trainer is not None else images

    def make_loader(self, dataset: Dataset, train: bool = False, mixed: bool = False) -> DataLoader:
        """A DataLoader over ``dataset``: with ``train``, the training batch size and a shuffle that
        depends only on the run's seed and the epoch; otherwise the evaluation batch size, in the
        dataset's order or, with ``mixed``, in one fixed order that mixes the classes."""
        sampler: Sampler | None = None
        trainer = self.trainer
        distributed = trainer is not None and trainer.world_size > 1
        if train:
            # torch.initial_seed() is seed_everything's seed (a random one when the run is not seeded). The
            # processes of a DDP run take their shares of one order, so they all take rank 0's seed: an
            # unseeded run has one per process, and the shares would overlap and miss images.
            seed = trainer.strategy.broadcast(torch.initial_seed(), src=0) if distributed else torch.initial_seed()
            if self.balanced_sampling:
                sampler = BalancedEpochSampler(labels_of(dataset), seed)
            else:
                sampler = EpochShuffleSampler(len(dataset), seed)
        elif mixed:
            sampler = MixedOrderSampler(len(dataset))
            if distributed:
                # Each process takes every n-th image of that order, none twice. Lightning's own
                # DistributedSampler pads the set to a multiple of the processes with repeated images,
                # which the accuracy would then count twice.
                sampler = UnrepeatedDistributedSamplerWrapper(
                    sampler, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
                )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=sampler.loader_generator if isinstance(sampler, EpochShuffleSampler) else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def _pin_memory(self) -> bool:
        trainer = self.trainer
        return bool(
            trainer is not None and trainer.accelerator is not None and trainer.strategy.root_device.type == "cuda"
        )

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.val_set, mixed=True)

    def test_dataloader(self) -> DataLoader:
        return self.make_loader(self.test_set, mixed=True)

    def predict_dataloader(self) -> DataLoader:
        if not self.predict_root:
            raise UserError("nothing to predict: give the images with --data.predict_root <file or folder>")
        files = self._readable_images(self.predict_root)
        trainer = self.trainer
        if trainer is not None and trainer.world_size > len(files):
            # Lightning's sampler gives each process a share and asserts that none is empty.
            raise UserError(
                f"{len(files)} image{'s' if len(files) > 1 else ''} to predict on {trainer.world_size} processes: "
                "predict on one device (--trainer.devices 1), or give at least as many images as processes"
            )
        return self.make_loader(ImageFiles(files, self.eval_transform()))

    def _readable_images(self, root: str) -> list[Path]:
        """The image files of ``root`` (a file or a folder) that decode, checked as at fit; the others
        are left out and reported, unless none is left."""
        files = list_images(root)
        bad = find_bad_images(files)
        if len(bad) == len(files):
            path, reason = bad[0]
            if len(files) == 1:
                raise UserError(f"image {path!r} cannot be read ({reason}): give a readable image file")
            raise UserError(
                f"none of the {len(files)} image files under {root!r} can be read (first: {path}, {reason})"
            )
        if bad:
            self.skipped += bad
            self._report_skipped(bad, Path(root))
        unreadable = {path for path, _ in bad}
        return [f for f in files if str(f) not in unreadable]

    def _report_skipped(self, bad: list[tuple[str, str]], folder: Path, listing: Path | None = None) -> None:
        """Warn about unreadable files left out (and say where they are all listed)."""
        shown = some((f"{os.path.relpath(path, folder)} ({reason})" for path, reason in bad), limit=10, sep="; ")
        where = f", all listed in {listing}" if listing else ""
        files = "file" if len(bad) == 1 else "files"
        rank_zero_warn(f"skipped {len(bad)} unreadable image {files} in {folder}{where}: {shown}")
