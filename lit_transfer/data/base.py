"""What every data module of lit_transfer offers the CLI and the model."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_transfer.data.images import ImageFiles, list_images
from lit_transfer.data.presets import Normalize
from lit_transfer.data.sampling import EpochShuffleSampler


class ClassificationDataModule(LightningDataModule):
    """Base of the data modules: ``root``, ``batch_size``, ``num_workers``, class names, and the
    normalisation of every batch (``mean``/``std``) once it is on the model's device.

    ``class_names`` is read when the CLI builds the model (it is linked to the model's
    ``class_names`` and ``num_classes``), so subclasses find their classes cheaply and raise a
    ``UserError`` for a missing or malformed folder before any training starts.
    """

    def __init__(
        self,
        root: str | None,
        batch_size: int,
        num_workers: int,
        eval_batch_size: int | None,
        predict_root: str | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.predict_root = predict_root

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

    @property
    def mean(self) -> tuple[float, ...]:
        return self.normalize.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.normalize.std

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The loaders give uint8 images (presets.Normalize says why): here they become the net's input.
        images, *rest = batch
        return [self.normalize(images), *rest]

    def _loader(self, dataset: Dataset, train: bool = False) -> DataLoader:
        # torch.initial_seed() is seed_everything's seed (a random one when the run is not seeded).
        sampler = EpochShuffleSampler(len(dataset), torch.initial_seed()) if train else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=sampler.loader_generator if sampler else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def _pin_memory(self) -> bool:
        trainer = self.trainer
        return bool(
            trainer is not None and trainer.accelerator is not None and trainer.strategy.root_device.type == "cuda"
        )

    def predict_dataloader(self) -> DataLoader:
        if not self.predict_root:
            from lit_transfer.errors import UserError

            raise UserError("nothing to predict: give the images with --data.predict_root <file or folder>")
        return self._loader(ImageFiles(list_images(self.predict_root), self.eval_transform()))
