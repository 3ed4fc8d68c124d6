"""Plain ``torch.nn`` networks (no Lightning inside), each with the ``ClassifierNet`` interface."""

from lit_transfer.nets.alexnet32 import AlexNet32
from lit_transfer.nets.base import ClassifierNet
from lit_transfer.nets.lenet import LeNet
from lit_transfer.nets.simple_cnn import SimpleCNN
from lit_transfer.nets.timm_net import TimmNet
from lit_transfer.nets.torchvision_nets import AlexNet, TorchvisionNet

__all__ = ["AlexNet", "AlexNet32", "ClassifierNet", "LeNet", "SimpleCNN", "TimmNet", "TorchvisionNet"]
