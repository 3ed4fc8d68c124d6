"""The Trainer of the command line: Lightning's, plus ``lr_find`` for the ``lr_find`` subcommand
(LightningCLI runs each subcommand as the Trainer method of that name)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer

from lit_transfer.callbacks import EMA
from lit_transfer.finetune.lr_find import LRFindResult, find_lr
from lit_transfer.models import ImageClassifier


class LitTransferTrainer(Trainer):
    def save_checkpoint(self, filepath: Any, weights_only: bool | None = None, storage_options: Any = None) -> None:
        """Lightning's, except that a weights-only checkpoint (a run's ``best-*.ckpt``) of a run that averages
        its weights (``--ema.decay``) holds the averaged weights its score was measured with: Lightning
        lets callbacks write into full checkpoints only (``callbacks.ema``)."""
        average = next((c for c in self.callbacks if isinstance(c, EMA)), None)
        with average.averaged_weights(self.lightning_module) if average and weights_only else nullcontext():
            super().save_checkpoint(filepath, weights_only=weights_only, storage_options=storage_options)

    def lr_find(
        self,
        model: ImageClassifier,
        datamodule: LightningDataModule | None = None,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_training: int = 100,
    ) -> LRFindResult:
        """Find a learning rate: Lightning's range test on the configured model, optimizer and data,
        learning-rate groups scaled together. Prints the suggestion and how to use it, saves the plot
        of loss against lr next to the run (with matplotlib), and writes no checkpoint.

        Args:
            model: the configured model.
            datamodule: the configured data.
            min_lr: the smallest learning rate tried.
            max_lr: the largest learning rate tried.
            num_training: training steps of the search, the rate rising exponentially from min_lr to max_lr.
        """
        model.start_from_initial_weights()  # the search starts from the weights a fit would start from
        result = find_lr(
            self, model, datamodule, Path(self.log_dir or self.default_root_dir), min_lr, max_lr, num_training
        )
        if self.is_global_zero:
            print("\n".join(result.lines()))
        return result
