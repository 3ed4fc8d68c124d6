"""Test-only callbacks, importable by a `python -m lit_transfer` subprocess started in the repo root."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback


class PauseAtEpoch(Callback):
    """At the start of ``epoch``, write ``marker`` and sleep: a window for the test to SIGKILL the run."""

    def __init__(self, epoch: int, marker: str, seconds: float = 120.0) -> None:
        self.epoch, self.marker, self.seconds = epoch, marker, seconds

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            Path(self.marker).write_text("paused")
            time.sleep(self.seconds)


class StopAfterEpoch(Callback):
    """Ends ``fit`` cleanly once ``epoch`` is done (its checkpoints written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True
