"""A trained net as a file for deployment (ONNX, TorchScript, a torch.export program) with what
predicting needs (class names, input size, preprocessing), and the check that the file computes what
the checkpoint's net computes."""

from lit_transfer.export.formats import FORMATS, Deployable, check_available, load_runner, write
from lit_transfer.export.parity import Parity, compare

__all__ = ["FORMATS", "Deployable", "Parity", "check_available", "compare", "load_runner", "write"]
