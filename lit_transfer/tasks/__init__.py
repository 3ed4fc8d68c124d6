"""LightningModules: the shared classifier and one small module per task."""

from lit_transfer.tasks.classifier import ImageClassifier
from lit_transfer.tasks.finetune import FineTuneClassifier

__all__ = ["FineTuneClassifier", "ImageClassifier"]
