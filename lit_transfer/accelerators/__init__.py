"""Accelerators beyond Lightning's own: the Ascend NPU.

Importing this package registers ``"npu"`` in Lightning's ``AcceleratorRegistry`` (the CLI imports
it before any Trainer is built), so ``--trainer.accelerator npu`` and ``Trainer(accelerator="npu")``
resolve to ``NPUAccelerator``. ``torch_npu`` itself is imported only when an NPU is used or probed.
"""

from lightning.pytorch.accelerators import AcceleratorRegistry

from lit_transfer.accelerators.npu import NPUAccelerator, NPUDDPStrategy, import_torch_npu, parse_npu_ids
from lit_transfer.accelerators.trainer_args import prepare_trainer_kwargs


def register_npu() -> None:
    """Register ``"npu"`` once (a later Lightning or plugin that brings its own keeps it)."""
    if NPUAccelerator.name() not in AcceleratorRegistry:
        NPUAccelerator.register_accelerators(AcceleratorRegistry)


register_npu()

__all__ = [
    "NPUAccelerator",
    "NPUDDPStrategy",
    "import_torch_npu",
    "parse_npu_ids",
    "prepare_trainer_kwargs",
    "register_npu",
]
