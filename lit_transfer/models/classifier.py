"""The shared classifier LightningModule every task builds on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.errors import UserError, first_line, require
from lit_transfer.files import safe_load
from lit_transfer.finetune.freezing import FreezeModules
from lit_transfer.finetune.weights import init_from_checkpoint
from lit_transfer.nets.base import AuxiliaryLogits, ClassifierNet
from lit_transfer.preprocessing import Preprocessing
from lit_transfer.schedules import build_scheduler, fit_to_run_length

# A net is configured without its class count; the model calls it with the data's num_classes.
NetFactory = Callable[[int], ClassifierNet]


def check_class_weights(weights: Any, num_classes: int) -> Any:
    """``class_weights`` as given, refused (``UserError``) when it cannot weigh ``num_classes`` classes."""
    if weights is None or weights == "auto":
        return weights
    if not isinstance(weights, list) or len(weights) != num_classes:
        raise UserError(
            f"model.class_weights {weights}: give auto, null or {num_classes} numbers (one per class, in label order)"
        )
    if any(not (w >= 0) for w in weights) or not any(w > 0 for w in weights):
        raise UserError(f"model.class_weights {weights}: give numbers of 0 or more, at least one above 0")
    return weights


def balanced_weights(counts: list[int]) -> Tensor:
    """images / (classes x images of the class) for every class (scikit-learn's "balanced"); a class
    with no training image gets 0."""
    counts_t = torch.tensor(counts, dtype=torch.float32)
    weights = counts_t.sum() / (len(counts) * counts_t)
    return torch.where(counts_t > 0, weights, torch.zeros_like(weights))


def batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> v2.Transform | None:
    """torchvision's MixUp and CutMix for the alphas above 0 (one of the two, drawn for each batch, when
    both are), or None; each turns ``(images, labels)`` into the mixed images and their soft targets."""
    require(mixup_alpha >= 0, f"model.mixup_alpha is {mixup_alpha}: give 0 (off) or more, e.g. 0.2")
    require(cutmix_alpha >= 0, f"model.cutmix_alpha is {cutmix_alpha}: give 0 (off) or more, e.g. 1.0")
    mixers = [
        mixer(alpha=alpha, num_classes=num_classes)
        for mixer, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
        if alpha > 0
    ]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def check_optimizer_settings(optimizer: OptimizerCallable) -> None:
    """Build the configured optimizer once for a stand-in parameter, so settings torch refuses (a
    negative lr, momentum or weight decay) are reported before any data is read, not at fit start."""
    try:
        built = optimizer([torch.zeros(1, requires_grad=True)])
    except ValueError as err:  # torch's "Invalid learning rate: -0.1", ...
        raise UserError(f"optimizer settings: {first_line(err)}: give values in range") from err
    lr = float(built.defaults.get("lr", 1.0))
    if lr <= 0:
        raise UserError(f"optimizer settings: lr is {lr}: give a learning rate above 0")


def _accuracy_metrics(num_classes: int) -> MetricCollection:
    # acc: the share of images right; acc_macro: the mean of the classes' accuracies, which a class
    # with few images moves as much as one with many. The labels come from the data module, always in
    # range: torchmetrics' argument checks would only wait on the device at every step (a host sync).
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
        "acc_macro": MulticlassAccuracy(num_classes, average="macro", validate_args=False),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", validate_args=False)
    return MetricCollection(metrics)


class MeanLoss(Metric):
    """The mean loss over an epoch's images, exact across processes: the sums of loss x images and of
    images, each summed over the processes (Lightning's ``sync_dist`` would average the processes' means
    whatever their image counts). Written here because torchmetrics' ``MeanMetric`` checks every update
    for NaN, which waits on the device at each step, and its ``nan_strategy="disable"`` drops the
    weights (torchmetrics#3434). A NaN loss averages to NaN."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, loss: Tensor, images: int) -> None:
        self.total += loss.detach().float() * images
        self.images += images

    def compute(self) -> Tensor:
        return self.total / self.images


class ImageClassifier(LightningModule):
    """Logits + cross-entropy with accuracy metrics; optimizer and scheduler come from the config.

    ``num_classes`` and ``class_names`` are linked from the data module by the CLI and saved in
    every checkpoint, so ``predict`` needs no data folder to name its classes.

    Args:
        net: the network (a ``lit_transfer.nets.ClassifierNet``, e.g. ``TorchvisionNet``), configured
            without its class count: the model builds it for ``num_classes``.
        num_classes: number of classes; linked from the data module by the CLI. null:
            ``len(class_names)``.
        class_names: class names in label order; linked from the data module by the CLI. null:
            the names ``0``, ``1``, ...
        optimizer: the optimizer and its options, e.g. ``{class_path: torch.optim.SGD, init_args:
            {lr: 0.01, momentum: 0.9}}``; null: ``torch.optim.AdamW`` with its defaults.
        lr_scheduler: the learning-rate scheduler and its options; null: a constant learning rate.
            A scheduler that takes ``total_steps`` (OneCycleLR) and is not given it gets the run's.
        scheduler_interval: step the scheduler every ``epoch`` or every ``step`` (batch); null:
            ``step`` for a scheduler given the run's ``total_steps``, else ``epoch``.
        label_smoothing: label smoothing of the cross-entropy loss, from 0.0 (none) to 1.0.
        init_from: checkpoint of an earlier run to start the net from, all but its head (left new,
            so the class count may differ); not read when a checkpoint is restored.
        tta: test-time augmentation of validation, test and predict: ``none``, or ``hflip`` (the
            mean of the probabilities of each image and its mirror; the loss and accuracy use it too).
        class_weights: weights of the classes in the training loss: null (all 1), ``auto`` (from the
            training split's counts: images / (classes x images of the class), so every class weighs
            as much in total), or one number per class in label order.
        mixup_alpha: MixUp of the training batches (torchvision's ``v2.MixUp``): each image blended with
            another of the batch, and their labels in the same shares, the share drawn from Beta(alpha,
            alpha); 0: off, 0.2 is usual. The loss takes the mixed (soft) labels; ``train/acc`` counts an
            image right when the net picks the class with the larger share.
        cutmix_alpha: CutMix of the training batches (``v2.CutMix``): a box of another image of the
            batch pasted in, the labels shared by area; 0: off, 1.0 is usual. With both alphas above 0,
            each batch gets one of the two, drawn at random.
        freeze: modules of the net kept as they start for the whole fit, BatchNorm statistics included
            (names as in the learning-rate groups: ``features``, ``layer1``, ``conv1``; not the head),
            e.g. the first layers of a net started from an earlier run with ``init_from``; null: none.
    """

    def __init__(
        self,
        net: NetFactory,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] | None = None,
        label_smoothing: float = 0.0,
        init_from: str | None = None,
        tta: Literal["none", "hflip"] = "none",
        class_weights: Literal["auto"] | list[float] | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        freeze: list[str] | None = None,
    ) -> None:
        super().__init__()
        if num_classes is None:
            num_classes = len(class_names) if class_names else None
        if not num_classes:
            raise UserError("the number of classes is unknown: give --data.root (a data folder) or --ckpt_path")
        if class_names is not None and len(class_names) != num_classes:
            raise UserError(f"{len(class_names)} class names {class_names} for {num_classes} classes: make them agree")
        self.save_hyperparameters()
        # Outside the CLI, hparams would hold the factories themselves, which a safe
        # (weights_only) checkpoint load cannot read back; keep only plain values there.
        for key in [k for k, v in self.hparams.items() if callable(v)]:
            del self.hparams[key]
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.net = net(num_classes)
        if not isinstance(self.net, ClassifierNet):
            raise UserError(
                f"the net {type(self.net).__name__} is not a lit_transfer.nets.ClassifierNet: subclass it and set "
                "head_name (the dotted name of its classifier layer)"
            )
        self.optimizer_factory = optimizer
        if optimizer is not None:
            check_optimizer_settings(optimizer)
        self.lr_scheduler_factory = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.label_smoothing = label_smoothing
        metrics = _accuracy_metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss, self.test_loss = MeanLoss(), MeanLoss()
        self.init_from = init_from
        if tta not in ("none", "hflip"):
            raise UserError(f"unknown model.tta {tta!r}: use none or hflip")
        self.tta = tta
        self.class_weights = check_class_weights(class_weights, num_classes)
        # Not saved in checkpoints: given in the settings, or computed again from the same split. Always a
        # tensor (all 1 until auto sets it), so the module has the same buffers from start to end (the
        # weight average, callbacks.ema, pairs the model's buffers with its copy's by position).
        weights = torch.tensor(class_weights if isinstance(class_weights, list) else [1.0] * num_classes)
        self.register_buffer("loss_weights", weights.float(), persistent=False)
        self.mixer = batch_mixer(mixup_alpha, cutmix_alpha, num_classes)
        self.frozen = [self.net.find_module(name) for name in freeze or []]
        if any(self.net.in_head(name) for name in self.frozen):
            raise UserError(
                f"model.freeze {freeze} names the head ({self.net.head_name}): it must train; freeze other modules"
            )
        self._initial_weights_done = False

    # -- initial weights ----------------------------------------------------------------------
    def load_initial_weights(self) -> None:
        """Weights the net starts from, loaded once when a run starts unless a checkpoint is
        restored (its weights replace them anyway, so resuming or predicting from a checkpoint
        never needs the files). Here: the backbone of an earlier run's checkpoint, ``init_from``,
        with the head left new; subclasses add pretrained weights."""
        if self.init_from:
            init_from_checkpoint(self.net, self.init_from)

    def expected_input(self) -> Preprocessing | None:
        """The input the net expects (``ClassifierNet.preprocessing``); subclasses with pretrained
        weights say what those were trained with. The CLI hands it to the data module (``follow``)."""
        return self.net.preprocessing

    def initial_weight_files(self) -> list[tuple[str, str]]:
        """``(what, path)`` of the local files ``load_initial_weights`` will read; subclasses add theirs."""
        return [("checkpoint", self.init_from)] if self.init_from else []

    def check_initial_weight_files(self) -> None:
        """Open the files the net will start from, so an unreadable one is reported before any data is
        read rather than when the run starts (the CLI calls this when no checkpoint is restored)."""
        for what, path in self.initial_weight_files():
            safe_load(path, what, mmap=True)

    def start_from_initial_weights(self) -> None:
        """Load the initial weights unless they were loaded or a checkpoint was restored (called at
        the start of every fit, validate, test and predict, and by the lr finder before its search)."""
        if not self._initial_weights_done:
            self._initial_weights_done = True
            self.load_initial_weights()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._initial_weights_done = True

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if stage == "fit" and isinstance(data, ClassificationDataModule):
            counts = data.train_class_counts()
            shown = ", ".join(f"{name} {n}" for name, n in zip(self.class_names, counts))
            rank_zero_info(f"training images per class: {shown}")
            if self.class_weights == "auto":
                self.loss_weights = balanced_weights(counts).to(self.device)
                rank_zero_info(f"class weights (auto): {', '.join(f'{w:.3g}' for w in self.loss_weights.tolist())}")
        # One validation image as the data module gives it: the model summary runs it through the net
        # for each layer's output size and FLOPs (with no example input, its FLOPs column is all zeros).
        val_set = getattr(self.trainer.datamodule, "val_set", None)
        if stage == "fit" and val_set is not None and len(val_set) > 0:
            image = val_set[0][0]
            if isinstance(image, Tensor) and image.dim() == 3:
                self.example_input_array = image.unsqueeze(0)

    # The Trainer restores a checkpoint before these hooks (calling on_load_checkpoint if it does).
    def on_fit_start(self) -> None:
        self.start_from_initial_weights()

    def on_validation_start(self) -> None:
        self.start_from_initial_weights()

    def on_test_start(self) -> None:
        self.start_from_initial_weights()

    def on_predict_start(self) -> None:
        self.start_from_initial_weights()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_outputs(self, x: Tensor) -> AuxiliaryLogits:
        """The logits of a training batch, with the net's auxiliary classifiers' (``ClassifierNet.forward_train``)."""
        return self.net.forward_train(x)

    def evaluation_logits(self, x: Tensor) -> Tensor:
        """The logits of validation, test and predict: the net's, or with ``tta: hflip`` the log of the
        mean probabilities of the images and their mirrors (logits of those probabilities, so the loss,
        the metrics and the softmax of predict all use the averaged prediction)."""
        if self.tta == "none":
            return self(x)
        both = torch.stack([self(x).log_softmax(-1), self(x.flip(-1)).log_softmax(-1)])
        return torch.logsumexp(both, dim=0) - math.log(2)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        if stage == "train" and self.mixer is not None:
            x, y = self.mixer(x, y)  # y: (batch, classes) soft targets
        logits, aux = self.training_outputs(x) if stage == "train" else (self.evaluation_logits(x), [])
        # Evaluation: every image counts the same.
        weights = self.loss_weights if stage == "train" and self.class_weights is not None else None
        loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=self.label_smoothing)
        for aux_weight, aux_logits in aux:
            loss = loss + aux_weight * F.cross_entropy(
                aux_logits, y, weight=weights, label_smoothing=self.label_smoothing
            )
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits, y.argmax(-1) if y.dim() > 1 else y)
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        else:
            mean = getattr(self, f"{stage}_loss")
            mean.update(loss, len(y))
            self.log(f"{stage}/loss", mean, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss, logits

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    # The logits go to callbacks (confusion matrix, prediction grid, per-class accuracy).
    def validation_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        return {"logits": self._step(batch, "val")[1].detach()}

    def test_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        return {"logits": self._step(batch, "test")[1].detach()}

    def predict_step(self, batch, batch_idx: int) -> dict[str, Any]:
        x, paths = batch
        probabilities = self.evaluation_logits(x).softmax(dim=-1)
        top_p, top_i = probabilities.max(dim=-1)
        return {
            "paths": list(paths),
            "indices": top_i.cpu(),
            "class_names": [self.class_names[i] for i in top_i.tolist()],
            "probabilities": top_p.cpu(),
            "all_probabilities": probabilities.cpu(),
        }

    def configure_callbacks(self):
        return [FreezeModules(self.frozen)] if self.frozen else []

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups; tasks with per-stage learning rates override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        # No default factory in the signature: jsonargparse would carry its init_args (AdamW's
        # weight_decay=0.01) over to whatever optimizer a config names instead.
        optimizer = (self.optimizer_factory or torch.optim.AdamW)(self.parameter_groups())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = build_scheduler(
            self.lr_scheduler_factory, optimizer, self.trainer.estimated_stepping_batches, self.scheduler_interval
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_start(self) -> None:
        if self.lr_scheduler_factory is not None:
            for config in self.trainer.lr_scheduler_configs:
                fit_to_run_length(
                    config, self.lr_scheduler_factory, self.trainer.estimated_stepping_batches, self.trainer.global_step
                )
