"""LR schedulers: building the one a config names (including ones that need the run's length),
refitting a resumed one to a new run length, and giving it a parameter group added later."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lit_transfer.errors import UserError


def scheduler_class(factory: Callable) -> Any:
    """The class a scheduler factory builds.

    jsonargparse gives ``partial(helper, instantiator, SchedulerClass, **init_args)``; a Python
    user may give ``partial(SchedulerClass, ...)`` or the class itself.
    """
    if isinstance(factory, partial):
        return next((a for a in factory.args if inspect.isclass(a)), factory.func)
    return factory


def build_scheduler(
    factory: Callable, optimizer: Optimizer, total_steps: int, interval: str | None = None
) -> dict[str, Any]:
    """A Lightning ``lr_scheduler`` config dict.

    Schedulers that take ``total_steps`` (OneCycleLR) and were not given it get the trainer's real
    number of optimizer steps and are stepped every batch, so the schedule ends on the last batch
    whatever ``max_epochs`` is. Everything else is stepped every epoch unless ``interval`` says so.
    """
    cls = scheduler_class(factory)
    kwargs = {}
    given = factory.keywords if isinstance(factory, partial) else {}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    if "total_steps" in params and given.get("total_steps") is None:
        kwargs["total_steps"] = int(total_steps)
        interval = interval or "step"
    scheduler = factory(optimizer, **kwargs)
    config: dict[str, Any] = {"scheduler": scheduler, "interval": interval or "epoch"}
    if isinstance(scheduler, ReduceLROnPlateau):
        config["monitor"] = "val/loss"
    return config


def fit_to_run_length(config, factory: Callable, total_steps: int, global_step: int) -> None:
    """Make a resumed per-step schedule end on this run's last batch.

    A checkpoint restores the scheduler with the ``total_steps`` of the run that saved it; resumed
    with a larger ``max_epochs``, OneCycleLR would raise "Tried to step N times" at the old end.
    OneCycleLR fixes its phase boundaries at construction, so a new one is built for the new length
    and moved to the current step (its learning rate is a closed-form function of the step).
    """
    scheduler = config.scheduler
    if getattr(scheduler, "total_steps", None) in (None, total_steps) or config.interval != "step":
        return
    fresh = factory(scheduler.optimizer, total_steps=int(total_steps))
    fresh.last_epoch = global_step - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": on purpose here
        fresh.step()
    config.scheduler = fresh


# Per-group state torch's schedulers keep in lists of their own (one entry per param group), besides
# the keys they put into the groups themselves (initial_lr; OneCycleLR's max_lr/min_lr).
_PER_GROUP_LISTS = ("base_lrs", "_last_lr", "max_lrs", "min_lrs", "lr_lambdas")


def add_group_to_schedulers(
    configs: Sequence[LRSchedulerConfig], factory: Callable | None, total_steps: int, optimizer: Optimizer, group: dict
) -> None:
    """Give ``group``, just added to ``optimizer``, its place in the optimizer's LR schedulers.

    A torch scheduler sets up its per-group state when it is built, so a group added later is
    ignored (StepLR, CosineAnnealingLR keep its lr fixed) or breaks it (OneCycleLR: KeyError
    'initial_lr'). Here ``factory`` (the model's) builds the scheduler a second time for the new group alone,
    stepped as often as the real one was, and its per-group state copied over: the group gets the
    learning rate (and, for OneCycleLR, momentum) it would have had had it been in the optimizer
    from the start, scaled from its own lr, and follows the schedule from then on. The extended
    scheduler is saved and restored with the checkpoint as usual.
    """
    for config in configs:
        scheduler = config.scheduler
        if scheduler.optimizer is not optimizer:
            continue
        if hasattr(scheduler, "_schedulers"):  # SequentialLR, ChainedScheduler
            raise UserError(
                f"{type(scheduler).__name__} cannot take the parameter groups unfreezing adds: use a single scheduler"
            )
        if factory is None:
            raise TypeError("a scheduler factory is needed to rebuild the scheduler for a new parameter group")
        options = {key: value for key, value in group.items() if key != "params"}
        alone = Optimizer([{**options, "params": [torch.zeros(1, requires_grad=True)]}], dict(optimizer.defaults))
        twin = build_scheduler(factory, alone, total_steps, config.interval)["scheduler"]
        if not isinstance(scheduler, ReduceLROnPlateau):  # that one steps on a metric, not a count
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
                for _ in range(scheduler.last_epoch - twin.last_epoch):
                    twin.step()
        group.update({key: value for key, value in alone.param_groups[0].items() if key != "params"})
        for attribute in _PER_GROUP_LISTS:
            values = getattr(scheduler, attribute, None)
            if isinstance(values, list) and len(values) == len(optimizer.param_groups) - 1:
                values.append(getattr(twin, attribute)[0])
