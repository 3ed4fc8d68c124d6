"""The learning-rate range test (Lightning's ``LearningRateFinder``) on the configured optimizer, with
its learning-rate groups scaled together.

Lightning's finder gives every param group the same learning rate while it searches. Groups set up
for fine-tuning (``early`` at 1e-5, ``head`` at 1e-3) are meant to keep their ratios, so a hook on
the optimizer sets each group, before every step, to the searched rate times its configured share
of the largest group's rate: the suggestion is then the rate of that largest group, and every group
scales by the same factor. Lightning has no option for this, hence the hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateFinder
from torch.optim import Optimizer

from lit_transfer.errors import UserError


class GroupedLearningRateFinder(LearningRateFinder):
    """Lightning's ``LearningRateFinder`` that keeps the ratios of the configured param groups while it
    searches, and ends the fit when the search is done (as ``Tuner.lr_find`` does)."""

    def __init__(self, min_lr: float, max_lr: float, num_training: int) -> None:
        super().__init__(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, update_attr=False)
        # What Tuner.lr_find sets: stop the fit after the search. Lightning offers no public switch.
        self._early_exit = True
        self.configured: list[tuple[str, float]] = []  # (group name, lr) as configured
        self.one_cycle = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        # A OneCycleLR schedule has already lowered lr to its start: its peak, max_lr, is the configured rate.
        self.configured = [
            (g.get("name", "default"), float(g.get("max_lr", g.get("initial_lr", g["lr"]))))
            for g in optimizer.param_groups
        ]
        self.one_cycle = "max_lr" in optimizer.param_groups[0]
        largest = max(lr for _, lr in self.configured)
        ratios = [lr / largest for _, lr in self.configured]
        reference = ratios.index(1.0)

        def scale(opt: Optimizer, args, kwargs) -> None:
            searched = opt.param_groups[reference]["lr"]  # the finder's rate, as its scheduler set it
            for group, ratio in zip(opt.param_groups, ratios):
                group["lr"] = searched * ratio

        handle = optimizer.register_step_pre_hook(scale)
        try:
            super().on_fit_start(trainer, pl_module)
        finally:
            handle.remove()

    @property
    def reference(self) -> tuple[str, float]:
        """The group with the largest configured rate, whose rate the finder reports."""
        return max(self.configured, key=lambda item: item[1])


@dataclass
class LRFindResult:
    suggestion: float
    groups: list[tuple[str, float]]  # as configured
    reference: tuple[str, float]
    one_cycle: bool  # the rate is OneCycleLR's max_lr
    plot: Path | None

    @property
    def scale(self) -> float:
        return self.suggestion / self.reference[1]

    def lines(self) -> list[str]:
        name, lr = self.reference
        flag = "--model.lr_scheduler.init_args.max_lr" if self.one_cycle else "--model.optimizer.init_args.lr"
        if len(self.groups) == 1:
            lines = [
                f"lr finder: suggested lr {self.suggestion:.3g} (configured {lr:.3g}); use it: {flag} {self.suggestion:.3g}"
            ]
        else:
            scaled = ", ".join(f"{n} {g * self.scale:.3g}" for n, g in self.groups)
            lines = [
                f"lr finder: suggested lr {self.suggestion:.3g} for group {name!r} (configured {lr:.3g}): every "
                f"group's lr times {self.scale:.3g}, i.e. {scaled} (the rates of {flag} and of the param_groups)"
            ]
        if self.plot is not None:
            lines.append(f"lr finder: loss against lr in {self.plot}")
        return lines


def find_lr(
    trainer: Trainer,
    model: LightningModule,
    datamodule: LightningDataModule | None,
    folder: Path,
    min_lr: float,
    max_lr: float,
    num_training: int,
) -> LRFindResult:
    """Run the range test and save its plot in ``folder`` (when matplotlib is installed)."""
    if not 0 < min_lr < max_lr:
        raise UserError(f"min_lr {min_lr} and max_lr {max_lr}: give 0 < min_lr < max_lr")
    if num_training < 2:
        raise UserError(f"num_training is {num_training}: give at least 2 steps")
    finder = GroupedLearningRateFinder(min_lr, max_lr, num_training)
    trainer.callbacks.insert(0, finder)
    epochs = trainer.fit_loop.max_epochs
    # The search is bounded by its steps, not by the run's epochs (every epoch has at least one step).
    trainer.fit_loop.max_epochs = max(epochs or 0, num_training)
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        trainer.callbacks.remove(finder)
        trainer.fit_loop.max_epochs = epochs
    result = finder.optimal_lr
    suggestion = None
    if result is not None:
        result.results["loss"] = unbiased(result.results["loss"])
        suggestion = tenth_of_minimum(result.results["lr"], result.results["loss"])
    if suggestion is None:
        raise UserError(
            "the lr finder found no learning rate where the loss falls steeply: try more steps (--num_training) "
            "or another range (--min_lr, --max_lr)"
        )
    plot = _save_plot(result, suggestion, folder)
    return LRFindResult(suggestion, finder.configured, finder.reference, finder.one_cycle, plot)


# The smoothing factor of Lightning's loss record in its lr finder (_LRCallback's beta).
SMOOTHING = 0.98


def unbiased(losses: list[float]) -> list[float]:
    """Lightning's smoothed losses with the right bias correction.

    Lightning divides the k-th running average (k from 0) by ``1 - beta ** (k + 2)``: it reads the
    step count after the optimizer step, one too many. The first losses come out about half their
    value, so the curve climbs over the first tens of steps and the steepest descent, the
    suggestion, lands there (1e-5 for the demo, which trains well at 1e-2). Dividing by
    ``1 - beta ** (k + 1)`` instead is the average the finder meant.
    """
    return [loss * (1 - SMOOTHING ** (k + 2)) / (1 - SMOOTHING ** (k + 1)) for k, loss in enumerate(losses)]


def tenth_of_minimum(lrs: list[float], losses: list[float], skip_begin: int = 10) -> float | None:
    """A tenth of the rate where the smoothed loss is lowest (fastai's ``minimum`` rule).

    Written here because Lightning's own suggestion, the steepest slope of the loss against the step,
    lands on the noise of the first, flat part of the curve (4.6e-6 for the demo, whose loss falls
    fastest near 1e-2); the minimum is robust to that noise.
    """
    if len(losses) <= skip_begin + 1:
        return None
    best = min(range(skip_begin, len(losses)), key=losses.__getitem__)
    return lrs[best] / 10


def _save_plot(finder, suggestion: float, folder: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("lr finder: pip install matplotlib for the plot of loss against lr")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lr_find.png"
    figure = finder.plot(suggest=False)
    figure.axes[0].axvline(suggestion, color="red", label=f"suggested {suggestion:.3g}")
    figure.axes[0].legend()
    figure.savefig(path)
    return path
