"""The global random states saved in every checkpoint, for an exact resume."""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback


class RNGStateCheckpoint(Callback):
    """Saves the global random states (torch, numpy, Python; CUDA and Ascend NPU devices) in every
    checkpoint and restores them.

    Lightning restores weights, optimizer, schedulers and loop counters but not the random states,
    so a resumed run would shuffle and drop out differently from the run it continues. With them, a
    run resumed from an end-of-epoch checkpoint ends with the same weights as one never stopped.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None  # restored from a checkpoint, applied at train start

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
        npu = _npu()
        if npu is not None:
            state["npu"] = npu.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        # Restored last, just before the first resumed epoch draws its shuffle order.
        state = self._pending
        if not state:
            return
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_as_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        npu = _npu()
        if "npu" in state and npu is not None:
            npu.set_rng_state_all(state["npu"])
        self._pending = None


def _npu() -> Any:
    """``torch.npu`` when torch_npu is loaded (it is only when an NPU run imported it) and has a device."""
    if "torch_npu" not in sys.modules:
        return None
    npu = getattr(torch, "npu", None)
    return npu if npu is not None and npu.is_available() else None


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples; a checkpoint may hand lists back."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
