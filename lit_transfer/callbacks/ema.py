"""An exponential moving average of the weights as an option group of the CLI (``--ema.decay 0.999``),
off until a decay is given: Lightning's ``EMAWeightAveraging``, with what a run here needs on top.

What Lightning's callback does: after every optimizer step it updates an ``AveragedModel`` (torch's
``swa_utils``), swaps the averaged weights in for each validation, writes them as the ``state_dict`` of
a full checkpoint (the training weights go under ``current_model_state``, and a resume puts both
back), and copies them into the model when the fit ends. So validation, ``last.ckpt``, predict and
export all use the averaged weights.

What this class adds, each a silent wrong result otherwise:

- The average is created when the fit is set up, before the pretrained weights are loaded, and
  holds nothing until its first update (which copies the model). Lightning swaps it in all the same:
  the sanity check and every validation before ``update_starting_at_step`` would score a net of random
  weights, a checkpoint written then would hold them, and a fit shorter than that start would end on
  them. Here the average is used only once it has been updated.
- A weights-only checkpoint (the run's ``best-*.ckpt``) is written without asking callbacks, so it
  would hold the training weights under a score measured with the averaged ones;
  ``averaged_weights()`` lets the Trainer write it with the averaged weights in place
  (``cli.trainer.LitTransferTrainer.save_checkpoint``).
- A checkpoint trained with the average, resumed without it, would go on from the averaged weights as
  if they were the training weights: that is refused in one line. The reverse starts the average at
  the resume, said in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.errors import UserError, require

# Where Lightning's callback keeps the training weights in a checkpoint whose state_dict it averaged.
TRAINING_WEIGHTS_KEY = "current_model_state"


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, off unless ``decay`` is given.

    The CLI adds it to every run (as it adds the checkpoint callbacks), so its options are flags.

    Args:
        decay: the weight of the average at each update (``average = decay * average + (1 - decay) *
            weights``), between 0 and 1; 0.999 is usual, a smaller decay for runs of a few hundred
            steps; null: no average.
        update_every_n_steps: update the average every this many optimizer steps.
        update_starting_at_step: the first optimizer step (counted from 0) that updates the average;
            until then validation and checkpoints use the training weights. null: from the first.
    """

    def __init__(
        self,
        decay: float | None = None,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
    ) -> None:
        require(decay is None or 0 < decay < 1, f"ema.decay is {decay}: give a number between 0 and 1 (e.g. 0.999)")
        require(update_every_n_steps >= 1, f"ema.update_every_n_steps is {update_every_n_steps}: give 1 or more")
        require(
            update_starting_at_step is None or update_starting_at_step >= 0,
            f"ema.update_starting_at_step is {update_starting_at_step}: give 0 or more",
        )
        super().__init__(
            decay=0.999 if decay is None else decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )
        self.decay = decay
        self.enabled = decay is not None
        self._swapped = False

    @property
    def averaged(self) -> bool:
        """Whether the average holds any training step yet."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    @contextmanager
    def averaged_weights(self, pl_module: LightningModule) -> Iterator[None]:
        """The averaged weights in ``pl_module`` for the length of the block (the training weights
        when there is no average yet)."""
        swap = self.averaged and not self._swapped
        if swap:
            self._swap_models(pl_module)
        try:
            yield
        finally:
            if swap:
                self._swap_models(pl_module)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.enabled:
            super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return self.enabled and super().should_update(step_idx=step_idx, epoch_idx=epoch_idx)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.averaged:
            self._swap_models(pl_module)
            self._swapped = True

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.averaged:
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.averaged:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Outside a fit the checkpoint's state_dict (the averaged weights, when it has them) is all there is to load.
        if trainer.state.fn != "fit":
            return
        trained_with_average = TRAINING_WEIGHTS_KEY in checkpoint
        if trained_with_average and not self.enabled:
            raise UserError(
                "the checkpoint was trained with an average of its weights (--ema.decay): resume with the same "
                "--ema.* flags, or start a new run from its averaged weights with --model.init_from"
            )
        if not self.enabled:
            return
        if trained_with_average:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
        else:
            rank_zero_info("ema: the checkpoint has no averaged weights; the average starts from this resume")
