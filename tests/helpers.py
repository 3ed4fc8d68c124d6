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


class WriteWeightsDigest(Callback):
    """At the end of fit, each process writes a digest of its net's weights to ``folder/rank<k>.txt``:
    DDP replicas that stayed in sync write the same."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / f"rank{trainer.global_rank}.txt").write_text(digest.hexdigest())
