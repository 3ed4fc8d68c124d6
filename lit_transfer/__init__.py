"""Image classification and transfer learning on PyTorch Lightning."""

__version__ = "0.2.0"
