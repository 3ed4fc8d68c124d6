"""Checkpoints that survive a kill: atomic writes, exact RNG resume, finding the newest complete file."""

from __future__ import annotations

import os
import random
import tempfile
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, flushes it to disk, then renames it.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the system
    temp folder; when that is another file system (a tmpfs /tmp, say) the final "move" is a copy, and
    a kill during the copy leaves a truncated checkpoint under the real name. It also never fsyncs.
    A rename within one folder is atomic, so here a checkpoint file is either complete or absent.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a checkpoint is not
            os.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_folder(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    with suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_complete(path: Path) -> bool:
    """A torch checkpoint is a zip archive whose directory is written last: a truncated file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def find_last_checkpoint(default_root_dir: str | None) -> Path | None:
    """The newest complete checkpoint of any earlier version folder (``last.ckpt``, or a step
    checkpoint written after it).

    Each run writes a new version folder, so Lightning's own ``ckpt_path="last"`` would look only
    in the new, empty one.
    """
    logs = Path(default_root_dir or ".") / "lightning_logs"
    candidates = sorted(logs.glob("version_*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in candidates if is_complete(p)), None)


class RNGStateCheckpoint(Callback):
    """Saves the global random states (torch, numpy, Python) in every checkpoint and restores them.

    Lightning restores weights, optimizer, schedulers and loop counters but not the random states,
    so a resumed run would shuffle and drop out differently from the run it continues. With them, a
    run resumed from an end-of-epoch checkpoint ends with the same weights as one never stopped.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # numpy's key array becomes a tensor: safe (weights_only) loading refuses numpy arrays.
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        # Restored last, just before the first resumed epoch draws its shuffle order.
        state = getattr(self, "_pending", None)
        if not state:
            return
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_as_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._pending = None


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples; a checkpoint may hand lists back."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
