"""Huawei Ascend NPU support for Lightning 2.x, which ships no NPU accelerator (see Lightning issue #19498
and the unmerged PR #19308).

``torch_npu`` (Ascend's PyTorch adapter) is imported only when an NPU is asked for or probed, so a
user without it never imports it; asking for ``npu`` without it is one clear ``UserError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from lightning.pytorch.accelerators import Accelerator
from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from lit_transfer.errors import UserError, first_line

INSTALL_HINT = (
    "install Ascend's PyTorch adapter matching your torch version (pip install torch-npu) "
    "and source the CANN environment (set_env.sh)"
)


def import_torch_npu(required: bool = True) -> ModuleType | None:
    """The ``torch_npu`` module, imported on first use; ``None`` (or a ``UserError`` if ``required``)
    when it is missing or cannot load (a missing CANN library surfaces as OSError/RuntimeError)."""
    try:
        import torch_npu
    except Exception as err:  # noqa: BLE001 - any failure to load means "no usable NPU stack"
        if not required:
            return None
        if isinstance(err, ModuleNotFoundError) and err.name == "torch_npu":
            raise UserError(
                f"--trainer.accelerator npu needs the torch_npu package, which is not installed: {INSTALL_HINT}"
            ) from err
        raise UserError(
            f"--trainer.accelerator npu: torch_npu failed to load ({first_line(err)}): {INSTALL_HINT}"
        ) from err
    return torch_npu


def npu_device_count() -> int:
    """Visible NPUs; 0 without torch_npu or without a device (never raises)."""
    torch_npu = import_torch_npu(required=False)
    if torch_npu is None:
        return 0
    try:
        return int(torch_npu.npu.device_count()) if torch_npu.npu.is_available() else 0
    except Exception:  # noqa: BLE001 - a driver that cannot answer has no usable device
        return 0


def require_npu() -> ModuleType:
    """``torch_npu`` with at least one visible device, else one ``UserError`` naming what is missing."""
    torch_npu = import_torch_npu(required=True)
    if npu_device_count() < 1:
        raise UserError(
            "--trainer.accelerator npu: torch_npu is installed but sees no NPU device: "
            "check `npu-smi info`, ASCEND_RT_VISIBLE_DEVICES and that the CANN environment is sourced"
        )
    return torch_npu


def parse_npu_ids(devices: Any) -> list[int]:
    """NPU ids for a Trainer ``devices`` value, with Lightning's GPU meanings: ``N`` (int or "N") the
    first N, ``-1``/``"auto"`` all, ``"0,2"`` or ``[0, 2]`` those ids. Each id is checked.

    Written by hand: Lightning's own parser (``_parse_gpu_ids``) only knows CUDA and MPS devices.
    """
    count = npu_device_count()
    asked = devices
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            devices = -1
        elif "," in text or text.startswith("["):
            try:
                devices = [int(x) for x in text.strip("[]").split(",") if x.strip()]
            except ValueError:
                raise UserError(
                    f"--trainer.devices {asked!r}: expected a count, -1, 'auto' or ids like '0,1'"
                ) from None
        else:
            try:
                devices = int(text)
            except ValueError:
                raise UserError(
                    f"--trainer.devices {asked!r}: expected a count, -1, 'auto' or ids like '0,1'"
                ) from None
    if isinstance(devices, bool) or not isinstance(devices, (int, Sequence)):
        raise UserError(f"--trainer.devices {asked!r}: expected a count, -1, 'auto' or ids like '0,1'")
    if isinstance(devices, int):
        if devices == -1:
            ids = list(range(count))
        elif devices >= 1:
            if devices > count:
                raise UserError(f"--trainer.devices {asked!r}: asked for {devices} NPUs but {count} are visible")
            ids = list(range(devices))
        else:
            raise UserError(f"--trainer.devices {asked!r}: use a positive count, -1 (all NPUs) or ids like '0,1'")
    else:
        ids = list(devices)
        if not all(type(i) is int for i in ids):
            raise UserError(f"--trainer.devices {asked!r}: NPU ids must be integers")
        if len(set(ids)) != len(ids):
            raise UserError(f"--trainer.devices {asked!r}: an NPU id is repeated")
        bad = [i for i in ids if not 0 <= i < count]
        if bad:
            visible = f"ids 0-{count - 1}" if count else "none"
            raise UserError(f"--trainer.devices {asked!r}: no NPU with id {bad[0]} (visible: {visible})")
    if not ids:
        raise UserError(f"--trainer.devices {asked!r}: no NPU is visible")
    return ids


class NPUAccelerator(Accelerator):
    """Lightning accelerator for Ascend NPUs (``torch_npu``); registered as ``"npu"``.

    Only the device plumbing lives here. The strategy and precision Lightning would pick for an
    accelerator it does not know are wrong (CPU root device, CUDA autocast); ``prepare_trainer_kwargs``
    builds the right ones before the Trainer is made.
    """

    @override
    def setup_device(self, device: torch.device) -> None:
        if device.type != "npu":
            # Lightning's default for devices=1 with a registered accelerator is SingleDeviceStrategy("cpu").
            raise UserError(
                f"the npu accelerator was given the {device} device: build the Trainer with "
                "lit_transfer.accelerators.prepare_trainer_kwargs(...) (the CLI does this for you)"
            )
        require_npu().npu.set_device(device)

    @override
    def setup(self, trainer) -> None:
        pass

    @override
    def teardown(self) -> None:
        torch_npu = import_torch_npu(required=False)
        if torch_npu is not None:
            torch_npu.npu.empty_cache()

    @override
    def get_device_stats(self, device) -> dict[str, Any]:
        return require_npu().npu.memory_stats(device)

    @staticmethod
    @override
    def parse_devices(devices: Any) -> list[int]:
        require_npu()
        return parse_npu_ids(devices)

    @staticmethod
    @override
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        return [torch.device("npu", i) for i in parse_npu_ids(devices)]

    @staticmethod
    @override
    def auto_device_count() -> int:
        return npu_device_count()

    @staticmethod
    @override
    def is_available() -> bool:
        # Lightning calls this for every registered accelerator when listing alternatives: never raise.
        return npu_device_count() > 0

    @staticmethod
    @override
    def name() -> str:
        return "npu"

    @classmethod
    @override
    def register_accelerators(cls, accelerator_registry) -> None:
        accelerator_registry.register(cls.name(), cls, description="Huawei Ascend NPU (torch_npu)")


class NPUDDPStrategy(DDPStrategy):
    """Lightning's ``DDPStrategy`` on NPUs: ``hccl`` process groups and the NPU's own side stream.

    Lightning's default backend for a device type it does not map is ``gloo`` (no NPU tensors),
    and ``DDPStrategy._setup_model`` wraps the model under ``torch.cuda.stream(torch.cuda.Stream())``,
    which fails without CUDA.
    """

    def __init__(self, *args: Any, process_group_backend: str | None = "hccl", **kwargs: Any) -> None:
        super().__init__(*args, process_group_backend=process_group_backend, **kwargs)

    @override
    def _setup_model(self, model: torch.nn.Module) -> DistributedDataParallel:
        device_ids = self.determine_ddp_device_ids()
        npu = require_npu().npu
        # Same reason as Lightning's CUDA stream: build the DDP buckets on a side stream.
        with npu.stream(npu.Stream()):
            return DistributedDataParallel(module=model, device_ids=device_ids, **self._ddp_kwargs)
