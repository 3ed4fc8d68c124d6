"""The ``channels_last`` (NHWC) memory format as a Lightning callback.

Convolutions run faster on NHWC tensors on tensor-core GPUs (with 16-mixed/bf16-mixed) and with
oneDNN on CPUs. The conversion lives here, in one place, so every task module gets it without a
change: the module's 4-D weights are converted in ``setup`` (the strategy's later ``.to(device)``
keeps the format) and every 4-D input to the module's ``forward`` is converted by a forward
pre-hook, on the device, after the batch was transferred.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


def _to_channels_last(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if isinstance(a, Tensor) and a.dim() == 4 else a for a in args
    )


def channels_last_pays(device_type: str, precision: str) -> bool:
    """Where ``auto`` turns channels_last on: on the CPU, where ``benchmarks/compute.py`` measured
    every task's training step 1.07x (AlexNet) to 1.5x (SimpleCNN) faster with it, and on CUDA
    with 16-bit mixed precision, whose tensor-core convolutions are NHWC kernels. Off elsewhere:
    fp32 on older GPUs can be slower, and the Ascend NPU keeps its own internal formats."""
    return device_type == "cpu" or (device_type == "cuda" and precision in ("16-mixed", "bf16-mixed"))


class ChannelsLast(Callback):
    """Train, validate and predict in the ``channels_last`` memory format.

    The CLI always adds it, set to ``auto``: ``--channels_last.enabled true|false`` decides instead.

    Args:
        enabled: convert the model's 4-D weights and its 4-D inputs to channels_last (NHWC);
            ``auto``: where it is faster (``channels_last_pays``).
    """

    def __init__(self, enabled: bool | Literal["auto"] = "auto") -> None:
        self.enabled = enabled
        self._hook = None

    def _wanted(self, trainer: Trainer | None) -> bool:
        if self.enabled != "auto":
            return bool(self.enabled)
        if trainer is None:
            return False
        return channels_last_pays(trainer.strategy.root_device.type, str(trainer.precision))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._hook is not None or not self._wanted(trainer):
            return
        pl_module.to(memory_format=torch.channels_last)
        self._hook = pl_module.register_forward_pre_hook(_to_channels_last)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
