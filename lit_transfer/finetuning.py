"""Freezing and unfreezing, generic over nets through the ``ClassifierNet`` interface.

Built on Lightning's ``BaseFinetuning`` (as in Lightning's ``computer_vision_fine_tuning.py``):
freezing happens in the callback's ``setup``, before the optimizer is built, so the model's
optimizer only receives trainable parameters; parameter groups a schedule adds later are stored in
the checkpoint by ``BaseFinetuning`` and restored on resume.
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from lit_transfer.nets.base import ClassifierNet

# full: every parameter trains; feature_extractor: only the net's head trains.
FinetuneMode = Literal["full", "feature_extractor"]


def net_of(pl_module: nn.Module) -> ClassifierNet:
    """The ``ClassifierNet`` a LightningModule trains (``pl_module.net``), or the module itself."""
    net = getattr(pl_module, "net", pl_module)
    if not isinstance(net, ClassifierNet):
        raise TypeError(f"{type(net).__name__} is not a ClassifierNet: freezing needs to know where its head is")
    return net


def keep_frozen_batchnorm_in_eval(module: nn.Module) -> None:
    """Put the BatchNorm layers that ``BaseFinetuning.freeze(train_bn=False)`` froze into eval mode.

    ``freeze`` marks them with ``track_running_stats=False``, which stops the statistics updates
    but, in train mode, still normalises with each batch's statistics instead of the pretrained
    running ones; eval mode uses the running statistics and leaves them untouched. Layers unfrozen
    later (``make_trainable`` sets the flag back) return to train mode.
    """
    for layer in module.modules():
        if isinstance(layer, _BatchNorm) and layer.running_mean is not None:
            layer.train(layer.track_running_stats and module.training)


class FeatureExtractor(BaseFinetuning):
    """Train only the net's head; the rest, BatchNorm statistics included, stays as loaded."""

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        net = net_of(pl_module)
        self.freeze(net, train_bn=False)
        self.make_trainable(net.get_classifier())

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Nothing is unfrozen later in this mode."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        # Lightning restores these modes after each validation run, so once per epoch is enough.
        keep_frozen_batchnorm_in_eval(pl_module)


def finetuning_callbacks(mode: FinetuneMode) -> list[BaseFinetuning]:
    """The callbacks that implement a fine-tuning mode (none for ``full``)."""
    if mode == "full":
        return []
    if mode == "feature_extractor":
        return [FeatureExtractor()]
    raise ValueError(f"unknown fine-tuning mode {mode!r}; expected full or feature_extractor")
