"""LightningModules: the shared classifier and one small module per task."""

from lit_transfer.tasks.classifier import ImageClassifier

__all__ = ["ImageClassifier"]
