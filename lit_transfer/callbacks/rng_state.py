"""The global random states saved in every checkpoint, for an exact resume."""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info


class RNGStateCheckpoint(Callback):
    """Saves the global random states (torch, numpy, Python; the run's CUDA or Ascend NPU device) in
    every checkpoint and restores them.

    Lightning restores weights, optimizer, schedulers and loop counters but not the random states,
    so a resumed run would shuffle and drop out differently from the run it continues. With them, a
    run resumed from an end-of-epoch checkpoint ends with the same weights as one never stopped.

    Of the accelerators, only the device the run uses is saved, and restored to the device the resumed
    run uses: a checkpoint moves between machines with other device counts (trained on 8 GPUs,
    resumed on 1), and a CPU run on a GPU machine never touches CUDA.

    Under DDP every process has its own states (each crops its own images, and an unseeded run seeds each
    process apart): the checkpoint holds each process's, gathered when it is written, and each process
    of the resumed run takes its own. A run resumed on another number of processes goes on (process k
    takes process k's states, where the checkpoint has them), but is not bit-identical to one never
    stopped: its images are shared out differently anyway.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None  # restored from a checkpoint, applied at train start
        self._device: torch.device | None = None  # the run's device, known from setup

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._device = trainer.strategy.root_device

    def state_dict(self) -> dict[str, Any]:
        state = self._own_state()
        if not _distributed():
            return {"processes": [state]}
        # Every process writes its checkpoint together (Lightning's rule under DDP); rank 0's file holds all.
        states: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(states, state)
        return {"processes": states}

    def _own_state(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # numpy's key array becomes a tensor: safe (weights_only) loading refuses numpy arrays.
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        device = self._device
        if device is not None and device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(device)
        elif device is not None and device.type == "npu":
            state["npu"] = _npu().get_rng_state(device)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        # Restored last, just before the first resumed epoch draws its shuffle order.
        if not self._pending:
            return
        states = self._pending.get("processes", [self._pending])  # written before DDP runs saved each process's
        rank, processes = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if _distributed() else (0, 1)
        )
        if len(states) != processes:
            rank_zero_info(
                f"random states: the checkpoint's run had {len(states)} process(es) and this one has {processes}: it "
                "goes on, but is not bit-identical to a run never stopped (that needs the same number of processes)"
            )
        self._pending = None
        if rank < len(states):
            self._restore(states[rank], trainer.strategy.root_device)

    @staticmethod
    def _restore(state: dict[str, Any], device: torch.device) -> None:
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_as_tuples(state["python"]))
        saved = state.get(device.type) if device.type in ("cuda", "npu") else None
        if isinstance(saved, list):  # written before one device's state was saved: one per device then
            saved = saved[0] if saved else None
        if saved is not None:
            (torch.cuda if device.type == "cuda" else _npu()).set_rng_state(saved, device)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _npu() -> Any:
    """``torch.npu`` (torch_npu is loaded: an NPU run imported it)."""
    return getattr(torch, "npu", None) if "torch_npu" in sys.modules else None


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples; a checkpoint may hand lists back."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
