"""Early stopping as an option group of the CLI (``--early_stopping.monitor val/acc``), off until a
metric to watch is given."""

from __future__ import annotations

from typing import Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.errors import UserError, require


class EarlyStop(EarlyStopping):
    """Lightning's ``EarlyStopping``, off unless ``monitor`` is given.

    The CLI adds it to every run (as it adds the checkpoint callbacks), so its options are flags;
    with ``monitor`` null it does nothing. Its counters are saved in checkpoints by Lightning, so a
    resumed run stops where the uninterrupted one would. A metric the run does not log is refused
    after the sanity check, before any training.

    Args:
        monitor: the logged metric to watch, e.g. ``val/acc`` or ``val/loss``; null: no early stopping.
        patience: validation epochs without improvement before the fit stops (0 or more).
        mode: ``max`` (higher is better) or ``min``; null: ``max`` for an accuracy (``*acc*``), else ``min``.
        min_delta: the least change that counts as an improvement.
        stopping_threshold: stop at once when the metric reaches this value; null: never.
    """

    def __init__(
        self,
        monitor: str | None = None,
        patience: int = 3,
        mode: Literal["min", "max"] | None = None,
        min_delta: float = 0.0,
        stopping_threshold: float | None = None,
    ) -> None:
        require(patience >= 0, f"early_stopping.patience is {patience}: give 0 or more validation epochs")
        require(min_delta >= 0, f"early_stopping.min_delta is {min_delta}: give 0 or more")
        mode = mode or ("max" if monitor and "acc" in monitor.rsplit("/", 1)[-1] else "min")
        super().__init__(
            monitor=monitor or "",
            patience=patience,
            mode=mode,
            min_delta=min_delta,
            stopping_threshold=stopping_threshold,
        )
        self.enabled = monitor is not None

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logged = sorted(trainer.callback_metrics)
        if self.enabled and logged and self.monitor not in logged:
            raise UserError(
                f"early_stopping.monitor {self.monitor!r} is not a metric this run logs: use one of {', '.join(logged)}"
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.enabled:
            super().on_train_epoch_end(trainer, pl_module)
            self._say_if_stopped(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.enabled:
            super().on_validation_end(trainer, pl_module)
            self._say_if_stopped(trainer)

    def _say_if_stopped(self, trainer: Trainer) -> None:
        if trainer.should_stop and self.stopped_epoch == trainer.current_epoch:
            rank_zero_info(
                f"early stopping after epoch {self.stopped_epoch}: {self.monitor} best {float(self.best_score):.4f} "
                f"({self.mode}; patience {self.patience}, threshold {self.stopping_threshold})"
            )
