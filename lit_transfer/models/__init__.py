"""LightningModules: the shared image classifier and its fine-tuning subclass. The tasks themselves
are YAML files in configs/."""

from lit_transfer.models.classifier import ImageClassifier
from lit_transfer.models.finetune import FineTuneClassifier

__all__ = ["FineTuneClassifier", "ImageClassifier"]
