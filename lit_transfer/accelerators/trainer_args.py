"""Trainer arguments for an accelerator Lightning does not know (``npu``).

Lightning resolves ``accelerator="npu"`` from its ``AcceleratorRegistry``, but its defaults around
the accelerator are CUDA- or CPU-shaped (``_AcceleratorConnector`` in Lightning 2.6):

* one device: ``SingleDeviceStrategy(device="cpu")`` for any accelerator but cuda/mps;
* ``16-mixed``/``bf16-mixed``: ``MixedPrecision(device="cuda")`` for any accelerator but cpu/mps;
* DDP: the ``gloo`` backend and a CUDA side stream;
* FSDP/DeepSpeed: CUDA-only code paths.

``prepare_trainer_kwargs`` builds the strategy and precision plugin Lightning should have picked,
from Lightning's own classes, and leaves every other accelerator's arguments untouched. The CLI
calls it before it builds the Trainer; Python users call it themselves:
``Trainer(**prepare_trainer_kwargs(dict(accelerator="npu", devices=2, precision="bf16-mixed")))``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.fabric.connector import _convert_precision_to_unified_args
from lightning.pytorch.plugins import MixedPrecision, Precision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy, StrategyRegistry

from lit_transfer.accelerators.npu import NPUAccelerator, NPUDDPStrategy, parse_npu_ids, require_npu
from lit_transfer.errors import UserError

_NPU_STRATEGIES = "'auto', 'single_device' or a 'ddp' variant (ddp, ddp_spawn, ddp_find_unused_parameters_true, ...)"


def _is_npu(accelerator: Any) -> bool:
    return accelerator == "npu" or isinstance(accelerator, NPUAccelerator)


def _npu_installed() -> bool:
    if "torch_npu" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch_npu") is not None
    except (ImportError, ValueError):
        return False


def auto_picks_npu(accelerator: Any) -> bool:
    """``auto`` means the NPU on a machine whose only accelerator is an NPU (Lightning's own ``auto``
    knows cuda/mps/tpu/cpu). Machines without torch_npu never import it here."""
    return (
        accelerator == "auto" and _npu_installed() and not torch.cuda.is_available() and NPUAccelerator.is_available()
    )


def npu_strategy(strategy: Any, parallel_devices: list[torch.device], num_nodes: int) -> Strategy:
    """The strategy Lightning would build for CUDA, made for NPUs; a strategy with no NPU support is
    refused with one clear line."""
    if isinstance(strategy, Strategy):
        if type(strategy) is DDPStrategy:
            raise UserError(
                "--trainer.strategy: a DDPStrategy object uses gloo and CUDA streams; with --trainer.accelerator npu "
                "use the name 'ddp' or lit_transfer.accelerators.NPUDDPStrategy"
            )
        if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)):
            raise UserError(
                f"--trainer.strategy {type(strategy).__name__} is not supported with --trainer.accelerator npu: "
                f"use {_NPU_STRATEGIES}"
            )
        return strategy
    name = str(strategy).lower()
    if name == "auto":
        if len(parallel_devices) == 1 and num_nodes == 1:
            return SingleDeviceStrategy(device=parallel_devices[0])
        return NPUDDPStrategy()
    if name == "single_device":
        if len(parallel_devices) != 1:
            raise UserError(f"--trainer.strategy single_device needs one NPU, got {len(parallel_devices)}")
        return SingleDeviceStrategy(device=parallel_devices[0])
    entry = StrategyRegistry[name] if name in StrategyRegistry else None
    if entry is not None and entry["strategy"] is DDPStrategy:
        # Same start method / find_unused_parameters as Lightning's entry of that name.
        return NPUDDPStrategy(**entry["init_params"])
    if entry is None:
        raise UserError(f"--trainer.strategy {strategy!r} is not a known strategy: use {_NPU_STRATEGIES}")
    raise UserError(
        f"--trainer.strategy {name} is not supported with --trainer.accelerator npu "
        f"({entry['strategy'].__name__} needs CUDA): use {_NPU_STRATEGIES}"
    )


def npu_precision_plugins(precision: Any, plugins: Any) -> tuple[Any, list | Any]:
    """``(precision, plugins)`` with an NPU autocast plugin instead of the CUDA one Lightning builds
    for ``16-mixed``/``bf16-mixed``."""
    unified = _convert_precision_to_unified_args(precision) if precision is not None else None
    if unified not in ("16-mixed", "bf16-mixed"):
        return precision, plugins
    if plugins is None:
        plugin_list = []
    elif isinstance(plugins, Iterable) and not isinstance(plugins, str):
        plugin_list = list(plugins)
    else:
        plugin_list = [plugins]
    if any(isinstance(p, Precision) for p in plugin_list):
        return precision, plugins  # the user chose a precision plugin; Lightning reports the clash
    scaler = npu_grad_scaler() if unified == "16-mixed" else None
    return None, [*plugin_list, MixedPrecision(unified, device="npu", scaler=scaler)]


def npu_grad_scaler() -> torch.amp.GradScaler:
    """torch_npu's own GradScaler for ``16-mixed`` on NPUs, else torch's for the ``npu`` device. NPUs of
    the Atlas training series run in saturation mode, where a float16 overflow leaves no inf or NaN in
    the gradients but sets a hardware flag: torch's GradScaler, which Lightning would build, looks for
    inf/NaN only and would step on overflowed gradients; torch_npu's reads the flag (and agrees on an
    overflow across processes)."""
    scaler = getattr(getattr(require_npu().npu, "amp", None), "GradScaler", None)
    return scaler() if scaler is not None else torch.amp.GradScaler("npu")


def prepare_trainer_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer keyword arguments with the NPU's strategy and precision plugin filled in when the
    accelerator is ``npu`` (or ``auto`` on an NPU-only machine); other accelerators pass unchanged."""
    kwargs = dict(kwargs)
    accelerator = kwargs.get("accelerator", "auto")
    if auto_picks_npu(accelerator):
        accelerator = kwargs["accelerator"] = "npu"
    if not _is_npu(accelerator):
        return kwargs
    require_npu()
    ids = parse_npu_ids(kwargs.get("devices", "auto"))
    parallel_devices = [torch.device("npu", i) for i in ids]
    kwargs["devices"] = ids
    kwargs["strategy"] = npu_strategy(kwargs.get("strategy", "auto"), parallel_devices, kwargs.get("num_nodes", 1) or 1)
    kwargs["precision"], kwargs["plugins"] = npu_precision_plugins(kwargs.get("precision"), kwargs.get("plugins"))
    return kwargs
