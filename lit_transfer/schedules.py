"""Building the LR scheduler a config names, including ones that need the run's length."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau


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
    fresh.step()
    config.scheduler = fresh
