"""Fine-tuning a pretrained net: the shared classifier plus pretrained ``weights``, a ``finetune`` mode,
per-module learning-rate groups, gradual unfreezing and a feature cache for a frozen backbone."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_transfer.errors import UserError
from lit_transfer.finetune.feature_cache import FeatureCache
from lit_transfer.finetune.freezing import FinetuneMode, finetuning_callbacks
from lit_transfer.finetune.param_groups import check_options, describe, optimizer_groups, parse_param_groups
from lit_transfer.finetune.weights import (
    LoadReport,
    is_weights_path,
    load_pretrained,
    torchvision_weights,
    torchvision_weights_of,
)
from lit_transfer.models.classifier import ImageClassifier, NetFactory
from lit_transfer.nets.base import AuxiliaryLogits
from lit_transfer.preprocessing import Preprocessing


class FineTuneClassifier(ImageClassifier):
    """``ImageClassifier`` whose net starts from pretrained ``weights``.

    Args:
        weights: ``DEFAULT``, ``IMAGENET1K_V1``, any torchvision weights name such as
            ``AlexNet_Weights.IMAGENET1K_V1``, a path to a ``.pth`` file, or null (random init);
            see ``lit_transfer.finetune.weights``.
        finetune: ``full`` trains every parameter; ``feature_extractor`` trains only the net's head
            and keeps the rest, BatchNorm statistics included, as loaded.
        param_groups: learning-rate groups, each naming modules of the net with its own optimizer
            options, e.g. ``[{name: layer4, modules: [layer4], lr: 1.0e-4}, ...]``; trainable
            parameters no group names form the group ``default`` (see ``lit_transfer.finetune.param_groups``).
        unfreeze: with ``finetune: feature_extractor``, the modules to unfreeze when an epoch starts,
            e.g. ``{2: [layer4], 4: [layer3]}``; each joins the optimizer with its group's options.
        feature_cache: with ``finetune: feature_extractor`` (no ``unfreeze``) and training images that
            are not randomly augmented (``data.augment: none``), compute the backbone's features of the
            training and validation images once and train the head on them (``lit_transfer.finetune.feature_cache``).

    The weights are loaded when fitting, validating, testing or predicting starts, unless a
    checkpoint is restored (``ImageClassifier.load_initial_weights``): its weights replace them
    anyway, so resuming or predicting from a checkpoint neither downloads them nor needs their file.
    """

    def __init__(
        self,
        net: NetFactory,
        weights: str | None = None,
        finetune: FinetuneMode = "full",
        param_groups: list[dict[str, Any]] | None = None,
        unfreeze: dict[int, list[str]] | None = None,
        feature_cache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, **kwargs)
        if weights is not None and not is_weights_path(weights):
            torchvision_weights(weights, self.net)  # an unknown name fails now, not after data loading
        self.weights = weights
        self.finetune = finetune
        self.weights_report: LoadReport | None = None
        self.param_group_specs = parse_param_groups(param_groups, self.net)
        if unfreeze and finetune != "feature_extractor":
            raise UserError("unfreeze needs finetune: feature_extractor (the net starts frozen but for its head)")
        self.unfreeze = {
            int(epoch): [self.net.find_module(m) for m in modules] for epoch, modules in (unfreeze or {}).items()
        }
        if self.frozen and finetune != "full":
            raise UserError(
                "freeze is for finetune: full (feature_extractor already freezes all but the head): use one of them"
            )
        if feature_cache and (finetune != "feature_extractor" or self.unfreeze):
            raise UserError(
                "feature_cache needs a backbone that stays frozen: finetune: feature_extractor and no unfreeze"
            )
        if feature_cache and self.tta != "none":
            raise UserError("tta flips images, and feature_cache validates on features: use one of them (tta: none)")
        if feature_cache and self.mixer is not None:
            raise UserError("mixup/cutmix mix images, and feature_cache trains on features: use one of them (alphas 0)")
        self.cached_features = FeatureCache() if feature_cache else None

    def load_initial_weights(self) -> None:
        """The pretrained ``weights`` first, then whatever the base class adds (``init_from``, the
        backbone of an earlier run, is the more specific start). The base class calls this once,
        when a run starts without restoring a checkpoint."""
        self.weights_report = load_pretrained(self.net, self.weights)
        super().load_initial_weights()

    def expected_input(self) -> Preprocessing | None:
        """What the torchvision weights ``weights`` names (or whose file it is, known by its file
        name, e.g. ``resnet50-11ad3fa6.pth``) were trained with, else what the net declares."""
        member = torchvision_weights_of(self.weights, self.net) if self.weights is not None else None
        return (Preprocessing.of_torchvision(member) if member is not None else None) or super().expected_input()

    def initial_weight_files(self) -> list[tuple[str, str]]:
        own = [("weights file", self.weights)] if self.weights is not None and is_weights_path(self.weights) else []
        return own + super().initial_weight_files()

    def configure_callbacks(self):
        own = finetuning_callbacks(self.finetune, self.unfreeze, self.param_group_specs, self.lr_scheduler_factory)
        return own + super().configure_callbacks()

    # -- learning-rate groups -------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        if not self.param_group_specs:
            return super().parameter_groups()
        return optimizer_groups(self.net.named_parameters(), self.param_group_specs)

    def configure_optimizers(self):
        configured = super().configure_optimizers()
        if self.param_group_specs:
            check_options(
                configured["optimizer"] if isinstance(configured, dict) else configured, self.param_group_specs
            )
        return configured

    def on_train_start(self) -> None:
        super().on_train_start()
        # Said here, not when the optimizer is made: a resumed run has its unfrozen groups back only now.
        if self.param_group_specs:
            rank_zero_info(describe(self.trainer.optimizers[0].param_groups, self.param_group_specs))

    # -- feature cache ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.cached_features is not None:  # a fit that ended in an exception left it attached
            self.cached_features.detach()

    def on_fit_start(self) -> None:
        super().on_fit_start()  # the pretrained weights first: the features come from them
        if self.cached_features is not None:
            self.cached_features.attach(self.trainer, self.net, self.device)

    def on_fit_end(self) -> None:
        if self.cached_features is not None:
            self.cached_features.detach()

    def forward(self, x: Tensor) -> Tensor:
        # While a fit runs on the feature cache, its batches hold the backbone's output, not images.
        if self.cached_features is not None and self.cached_features.active:
            return self.net.forward_head(x)
        return super().forward(x)

    def training_outputs(self, x: Tensor) -> AuxiliaryLogits:
        if self.cached_features is not None and self.cached_features.active:
            return AuxiliaryLogits(self(x), [])  # the head alone: auxiliary classifiers are in the frozen backbone
        return super().training_outputs(x)
