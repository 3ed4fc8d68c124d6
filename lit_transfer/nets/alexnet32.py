"""AlexNet adapted to 32x32 images, as in the CIFAR-10 from-scratch tutorial."""

from __future__ import annotations

from torch import Tensor, nn

from lit_transfer.nets.base import ClassifierNet, layer_stages


class AlexNet32(ClassifierNet):
    """AlexNet's five convolutions and three fully connected layers, resized for 32x32 inputs.

    The small first kernel/stride and the stride-1 poolings keep a 6x6 map after the last
    convolution (256 x 6 x 6 = 9216 features, as in the ImageNet AlexNet), so the classifier keeps
    AlexNet's shape at half the width (4608). 67,004,746 parameters for 10 classes.

    Args:
        num_classes: number of outputs (given by the model, from the data).
        dropout: dropout probability before each of the first two fully connected layers, 0.0 to 1.0.
    """

    head_name = "classifier.6"

    def __init__(self, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=4, stride=2),  # 32 -> 15
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=1),  # 15 -> 14
            nn.Conv2d(64, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 14 -> 7
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=1),  # 7 -> 6
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4608),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4608, 4608),
            nn.ReLU(inplace=True),
            nn.Linear(4608, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))

    def stages(self) -> list[str]:
        # Stem to head, one stage per learnable layer, so freezing and per-stage learning rates can
        # pick "everything before classifier.6" or "the last two convolutions" alike.
        return layer_stages(self)
