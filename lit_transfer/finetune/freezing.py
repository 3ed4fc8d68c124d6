"""Freezing and unfreezing, generic over nets through the ``ClassifierNet`` interface.

Built on Lightning's ``BaseFinetuning`` (as in Lightning's ``computer_vision_fine_tuning.py``):
freezing happens in the callback's ``setup``, before the optimizer is built, so the model's
optimizer only receives trainable parameters; parameter groups a schedule adds later are stored in
the checkpoint by ``BaseFinetuning`` and restored on resume (``GradualUnfreezing`` adds what that
leaves out: the restored modules' ``requires_grad`` and the LR schedulers' per-group state).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from lit_transfer.finetune.param_groups import GroupSpec, optimizer_groups
from lit_transfer.nets.base import ClassifierNet
from lit_transfer.schedules import add_group_to_schedulers

# full: every parameter trains; feature_extractor: only the net's head trains.
FinetuneMode = Literal["full", "feature_extractor"]


def net_of(pl_module: nn.Module) -> ClassifierNet:
    """The ``ClassifierNet`` a LightningModule trains (its ``net``, as lit_transfer's models declare),
    or the module itself."""
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


class FreezeModules(BaseFinetuning):
    """Keep the named modules of the net as they start, BatchNorm statistics included, for the whole
    fit (``--model.freeze``): e.g. the first layers of a net started from an earlier run (``init_from``)."""

    def __init__(self, modules: Sequence[str] = ()) -> None:
        super().__init__()
        self.frozen = list(modules)  # full module names of the net

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        net = net_of(pl_module)
        self.freeze([net.get_submodule(name) for name in self.frozen], train_bn=False)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Nothing is unfrozen later."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        # Lightning restores these modes after each validation run, so once per epoch is enough.
        keep_frozen_batchnorm_in_eval(pl_module)


class FreezeBackbone(FreezeModules):
    """Train only the net's head; the rest, BatchNorm statistics included, stays as loaded
    (``finetune: feature_extractor``)."""

    @property
    def state_key(self) -> str:
        # Checkpoints written before this class was renamed hold its state under the old name.
        return "FeatureExtractor" if type(self) is FreezeBackbone else super().state_key

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        net = net_of(pl_module)
        self.freeze(net, train_bn=False)
        self.make_trainable(net.get_classifier())


class GradualUnfreezing(FreezeBackbone):
    """Train only the head at first, then unfreeze more of the net at given epochs.

    ``schedule`` maps an epoch to the (full) names of the modules unfrozen when it starts, e.g.
    ``{2: ["model.layer4"], 4: ["model.layer3"]}``. Their parameters join the optimizer as new
    groups, split by the model's learning-rate groups (``groups``, see ``lit_transfer.finetune.param_groups``):
    each with its group's name and options, or the optimizer's own options (group ``default``). A
    name already in the optimizer gets the epoch appended (``early-epoch6``), as Lightning's
    learning-rate monitor needs unique names. Each LR scheduler of the optimizer takes the new
    groups as if they had been there from the start (``schedules.add_group_to_schedulers``, which
    rebuilds the scheduler with ``scheduler_factory``, the model's).

    Resuming: ``BaseFinetuning`` saves the added groups in the checkpoint and re-creates them before
    the optimizer state is loaded, but the modules behind them stay frozen (``freeze_before_training``
    froze them again); this callback also saves which modules it unfroze and makes them trainable.

    Several processes (DDP): DDP averages the gradients of the parameters that were trainable when it
    wrapped the net, at the start of the fit; it never learns of the ones unfrozen later, which each
    process would then train on its own share of the images, the replicas drifting apart with no
    error. This callback averages their gradients across the processes before each optimizer step (one
    all-reduce of them together; DDP's own overlaps with the backward pass, this one follows it).
    Nothing in Lightning or torch re-registers parameters with a running DDP.
    """

    def __init__(
        self,
        schedule: Mapping[int, Sequence[str]],
        groups: Sequence[GroupSpec] = (),
        scheduler_factory: Callable | None = None,
    ) -> None:
        super().__init__()
        self.schedule = {int(epoch): list(modules) for epoch, modules in sorted(schedule.items())}
        self.groups = list(groups)
        self.scheduler_factory = scheduler_factory
        self.unfrozen: list[str] = []  # saved in checkpoints
        self._synced_by_ddp: set[int] = set()  # ids of the parameters trainable when DDP wrapped the net

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "unfrozen": list(self.unfrozen)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.unfrozen = list(state_dict.get("unfrozen", []))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The strategy wrapped the net (DDP) just before this hook: what trains now is what DDP syncs.
        self._synced_by_ddp = {id(p) for p in pl_module.parameters() if p.requires_grad}
        restarting = self._restarting
        super().on_fit_start(trainer, pl_module)  # re-creates the groups added before the checkpoint
        if restarting:
            net = net_of(pl_module)
            self.make_trainable([net.get_submodule(name) for name in self.unfrozen])
        else:
            self.unfrozen = []

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if trainer.world_size < 2:
            return
        thawed = [
            p
            for p in pl_module.parameters()
            if p.requires_grad and p.grad is not None and id(p) not in self._synced_by_ddp
        ]
        if thawed:
            grads = [p.grad for p in thawed]
            averaged = trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
            for grad, value in zip(grads, averaged.split([g.numel() for g in grads])):
                grad.copy_(value.view_as(grad))

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch in self.schedule:
            self.unfreeze(pl_module, self.schedule[epoch], optimizer, epoch)

    def unfreeze(self, pl_module: LightningModule, modules: Sequence[str], optimizer: Optimizer, epoch: int) -> None:
        """Make ``modules`` trainable and add their newly trainable parameters to ``optimizer``.

        Written out rather than ``BaseFinetuning.unfreeze_and_add_param_group``: that one sets only
        ``lr``, and its ``filter_on_optimizer`` compares parameter *values* (``torch.equal``), so a
        freshly initialised BatchNorm weight (all ones) counts as already in the optimizer when
        another BatchNorm of that width is, and is silently left out. Parameters already trainable
        (the head; a module unfrozen before a mid-epoch resume) are left where they are.
        """
        net = net_of(pl_module)
        frozen = {id(p) for p in net.parameters() if not p.requires_grad}
        self.make_trainable([net.get_submodule(name) for name in modules])
        thawed = [(name, p) for name, p in net.named_parameters() if id(p) in frozen and p.requires_grad]
        names = {group.get("name") for group in optimizer.param_groups}
        added = []
        for group in optimizer_groups(thawed, self.groups):
            if group["name"] in names:
                group["name"] = f"{group['name']}-epoch{epoch}"
            names.add(group["name"])
            optimizer.add_param_group(group)
            group = optimizer.param_groups[-1]
            trainer = pl_module.trainer
            if trainer.lr_scheduler_configs:
                steps = trainer.estimated_stepping_batches
                add_group_to_schedulers(trainer.lr_scheduler_configs, self.scheduler_factory, steps, optimizer, group)
            added.append(f"{group['name']} ({len(group['params'])} tensors, lr {group['lr']:.3g})")
        self.unfrozen += [name for name in modules if name not in self.unfrozen]
        rank_zero_info(
            f"epoch {epoch}: unfroze {', '.join(modules)}; new optimizer groups: {', '.join(added) or 'none'}"
        )


def finetuning_callbacks(
    mode: FinetuneMode,
    unfreeze: Mapping[int, Sequence[str]] | None = None,
    groups: Sequence[GroupSpec] = (),
    scheduler_factory: Callable | None = None,
) -> list[BaseFinetuning]:
    """The callbacks that implement a fine-tuning mode (none for ``full``); ``unfreeze`` (epoch ->
    full module names) turns ``feature_extractor`` into gradual unfreezing, whose new parameter groups
    join the LR schedulers that ``scheduler_factory`` builds."""
    if mode == "full":
        return []
    if mode == "feature_extractor":
        return [GradualUnfreezing(unfreeze, groups, scheduler_factory) if unfreeze else FreezeBackbone()]
    raise ValueError(f"unknown fine-tuning mode {mode!r}; expected full or feature_extractor")
