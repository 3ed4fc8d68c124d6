"""LeNet-5 as the Fashion-MNIST tutorials build it (d2l's "Convolutional Neural Networks (LeNet)")."""

from __future__ import annotations

from torch import Tensor, nn

from lit_transfer.nets.base import ClassifierNet, layer_stages
from lit_transfer.preprocessing import Preprocessing


class LeNet(ClassifierNet):
    """Two 5x5 convolutions (6 and 16 channels, the first padded to keep 28x28), each followed by a
    sigmoid and a 2x2 max-pool, then fully connected layers of 120, 84 and ``num_classes`` with
    sigmoids between them. Takes 28x28 gray images (1 channel): the data module makes any images so.
    61,706 parameters for 10 classes.

    Args:
        num_classes: number of outputs (given by the model, from the data).
    """

    head_name = "classifier.4"
    preprocessing = Preprocessing(image_size=28, resize_size=28, channels=1, source="LeNet")

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),  # 28 -> 28
            nn.Sigmoid(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # 14 -> 10
            nn.Sigmoid(),
            nn.MaxPool2d(2),  # 10 -> 5
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.Sigmoid(),
            nn.Linear(120, 84),
            nn.Sigmoid(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def stages(self) -> list[str]:
        # One stage per learnable layer: freeze and learning-rate groups may pick single layers.
        return layer_stages(self)
