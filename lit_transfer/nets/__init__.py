"""Plain ``torch.nn`` networks (no Lightning inside), each with the ``ClassifierNet`` interface."""

from lit_transfer.nets.base import ClassifierNet
from lit_transfer.nets.simple_cnn import SimpleCNN

__all__ = ["ClassifierNet", "SimpleCNN"]
