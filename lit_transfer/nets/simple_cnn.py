"""A small convolutional net for the offline demo and for tests."""

from __future__ import annotations

from torch import Tensor, nn

from lit_transfer.nets.base import ClassifierNet


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SimpleCNN(ClassifierNet):
    """Three conv blocks, global average pooling and a linear head; works at any input size >= 8 px.

    Args:
        num_classes: number of outputs (given by the model, from the data).
        width: output channels of the first conv block, doubled by each of the other two (the head
            gets ``4 * width`` features).
        dropout: dropout probability of the pooled features before the head, 0.0 to 1.0.
    """

    head_name = "head"

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.stem = _conv_block(3, width)
        self.body = nn.Sequential(
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))
