"""What input a net expects: the size it sees, how images are resized to it, and their normalisation.

Pretrained weights were trained on images prepared one way, and a net fine-tuned from them does best
when it gets its images the same way. torchvision's weights say how in their own ``transforms()``
(ResNet50's ``IMAGENET1K_V2`` evaluates at resize 232 and crop 224, where ``IMAGENET1K_V1`` uses 256);
a user's ``ClassifierNet`` declares its ``preprocessing``. A data module takes from them what its config
leaves unset (``ClassificationDataModule.follow``): values in the YAML or on the command line win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
from torchvision.transforms import InterpolationMode

from lit_transfer.errors import require

# The resize interpolations torch's uint8 path supports (torchvision's InterpolationMode values).
Interpolation = Literal["bilinear", "bicubic", "nearest"]
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)


# The share of the resized image the center crop keeps when no resize size is given (256 for 224).
CROP_FRACTION = 0.875
# torchvision weights whose nets take (x - 0.5) / 0.5 rather than ImageNet's normalisation.
TENSORFLOW_NORMALISED = {"GoogLeNet_Weights", "Inception_V3_Weights"}


def eval_resize_size(image_size: int, resize_size: int | None) -> int:
    """The short side images are resized to before the center crop of ``image_size``."""
    return resize_size or round(image_size / CROP_FRACTION)


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation transform and normalisation a net expects; a field left None is not said.

    ``image_size``: side of the square center crop the net gets; ``resize_size``: short side images
    are resized to before that crop; ``interpolation``: the resize's; ``mean``/``std``: per channel
    (R, G, B; or one value for every channel), of 0..1 pixel values; ``channels``: the channels the net
    takes, 1 (gray) or 3 (RGB, what None means). ``source`` says where the values come from, for the
    run's log.
    """

    image_size: int | None = None
    resize_size: int | None = None
    interpolation: Interpolation | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(float(v) for v in value))

    @classmethod
    def of_torchvision(cls, weights: Any) -> Preprocessing | None:
        """What a torchvision weights member's ``transforms()`` does, where it is the classification
        preset (resize, center crop, normalise) and not another task's."""
        transform = weights.transforms()
        # torchvision's ImageClassification preset (private class): known by its attributes.
        if not all(hasattr(transform, key) for key in ("crop_size", "resize_size", "mean", "std", "interpolation")):
            return None
        # GoogLeNet's and Inception v3's weights (ported from TensorFlow) take (x - 0.5) / 0.5. torchvision's
        # builders, given the weights, add a step that turns ImageNet-normalised input into that
        # (transform_input); a net built without weights and loaded afterwards has no such step, so
        # the images are normalised that way instead.
        tensorflow_input = type(weights).__name__ in TENSORFLOW_NORMALISED
        return cls(
            image_size=transform.crop_size[0],
            resize_size=transform.resize_size[0],
            interpolation=InterpolationMode(transform.interpolation).value,
            mean=(0.5, 0.5, 0.5) if tensorflow_input else transform.mean,
            std=(0.5, 0.5, 0.5) if tensorflow_input else transform.std,
            source=str(weights),
        )

    def values(self) -> dict[str, Any]:
        """The fields that are set, without ``source`` (mean and std as lists, as a config writes them)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if key != "source" and value is not None
        }

    def or_else(self, other: Preprocessing | None) -> Preprocessing:
        """These values, with ``other``'s where these are None."""
        if other is None:
            return self
        mine = {key: value for key, value in asdict(self).items() if value is not None and key != "source"}
        return Preprocessing(**{**asdict(other), **mine, "source": self.source or other.source})

    def describe(self) -> str:
        mean = ", ".join(f"{v:g}" for v in self.mean or ())
        std = ", ".join(f"{v:g}" for v in self.std or ())
        gray = ", 1 channel (gray)" if self.channels == 1 else ""
        return (
            f"resize {self.resize_size} ({self.interpolation}), center crop {self.image_size}, "
            f"mean ({mean}), std ({std}){gray}"
        )


def check_given(
    image_size: int | None,
    resize_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> None:
    """Refuse sizes and normalisation values a data module could not use (``UserError``)."""
    for key, value in (("image_size", image_size), ("resize_size", resize_size)):
        require(value is None or value >= 1, f"data.{key} is {value}: give a size in pixels of at least 1")
    if image_size is not None and resize_size is not None:
        require(
            resize_size >= image_size,
            f"data.resize_size {resize_size} is smaller than data.image_size {image_size}, so the center crop "
            "would pad the images with black: give a resize_size of at least image_size",
        )
    for key, value in (("mean", mean), ("std", std)):
        require(
            value is None or len(value) in (1, 3),
            f"data.{key} is {list(value or [])}: give 3 values, one per channel (R, G, B), or 1 for gray images",
        )
    require(std is None or all(v > 0 for v in std), f"data.std is {list(std or [])}: give values above 0")


class Normalize:
    """Normalises a batch of images with the data set's mean and std, after it reached its device.

    The presets give ``uint8`` images and the data modules normalise whole batches with this, in
    ``on_after_batch_transfer``, as timm's ``PrefetchLoader`` and FFCV do: a float image is four
    times the bytes of a uint8 one to write, collate, pass between processes and copy to a GPU. In
    ``benchmarks/input_pipeline.py`` the loader handed out uint8 batches 15 % (one process) to 28 %
    (two workers) faster than the same batches normalised on the CPU; on a GPU the batch crosses the
    bus as uint8 and is normalised there. Batches of any other dtype (the feature cache's features)
    pass through unchanged.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        # (x - 255 mean) * 1 / (255 std), in place on one float copy: three quick passes. A mixed-dtype
        # torch.sub(uint8, float) would save one but runs about 5x slower on the CPU.
        self._offset = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self._scale = 1 / (torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1) * 255)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        if self._offset.device != images.device:
            self._offset, self._scale = self._offset.to(images.device), self._scale.to(images.device)
        return images.float().sub_(self._offset).mul_(self._scale)
