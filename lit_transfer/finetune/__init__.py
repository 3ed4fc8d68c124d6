"""Fine-tuning: pretrained weights and ``init_from`` (``weights``), learning-rate groups
(``param_groups``), freezing and gradual unfreezing (``freezing``) and the frozen backbone's feature
cache (``feature_cache``). Talks to nets only through ``ClassifierNet`` and to data only through
``ClassificationDataModule``'s declared surface."""

from lit_transfer.finetune.feature_cache import FeatureCache
from lit_transfer.finetune.freezing import FinetuneMode, FreezeBackbone, GradualUnfreezing, finetuning_callbacks
from lit_transfer.finetune.param_groups import GroupSpec, parse_param_groups
from lit_transfer.finetune.weights import LoadReport, init_from_checkpoint, load_pretrained

__all__ = [
    "FeatureCache",
    "FinetuneMode",
    "FreezeBackbone",
    "GradualUnfreezing",
    "GroupSpec",
    "LoadReport",
    "finetuning_callbacks",
    "init_from_checkpoint",
    "load_pretrained",
    "parse_param_groups",
]
