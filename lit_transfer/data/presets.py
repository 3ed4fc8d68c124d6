"""Named transform presets, after torchvision's ``references/classification/presets.py``.

Every data module builds its transforms here instead of spelling them out at each call site.
The presets take PIL images and ``uint8`` tensors alike; the data modules give them tensors
(``lit_transfer.data.images.load_image``): torch's uint8 resize is faster than PIL's. Each preset
says in ``decode_size`` how small a JPEG may be decoded (DCT scaling) without losing detail it uses.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The CIFAR-10 tutorial's values (its std is the commonly copied 0.2023/0.1994/0.2010, not the
# per-pixel std 0.247/0.243/0.261; kept so results match the recipe).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# "imagenet": RandomResizedCrop + flip (fine-tuning pretrained nets); "crop_flip": RandomCrop with
# padding + flip (CIFAR); "flip": resize + flip; "none": the eval pipeline (also what the
# frozen-backbone feature cache needs, since its features must not change between epochs).
Augment = Literal["imagenet", "crop_flip", "flip", "none"]


# RandomResizedCrop's defaults: the smallest crop keeps 8 % of the area at an aspect ratio down to 3/4,
# so its short side is at least sqrt(0.08 * 3/4) = 0.245 of the image's short side.
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
_RRC_MIN_SIDE = math.sqrt(RRC_SCALE[0] * RRC_RATIO[0])


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]


class _Preset(T.Compose):
    """``steps``, then ToImage, ToDtype(float32, scale=True) and Normalize; ``decode_size`` says how
    small a JPEG may be decoded without changing what the steps make of it (0: full size).

    A uint8 tensor, what the data modules' loader gives, is normalised in two passes over its pixels,
    ``(x - 255 mean) / (255 std)``, instead of those three steps' four passes and two float copies:
    about a tenth of the whole input pipeline's time (benchmarks/input_pipeline.py). PIL images and
    float tensors take the three steps as listed.
    """

    def __init__(self, steps: list, mean: Sequence[float], std: Sequence[float], decode_size: int) -> None:
        super().__init__(steps + _to_normalized_tensor(mean, std))
        self.decode_size = decode_size
        self._offset = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) * 255
        self._scale = 1 / (torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) * 255)

    def forward(self, image):
        *steps, to_image, to_dtype, normalize = self.transforms
        for step in steps:
            image = step(image)
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            return torch.sub(image.as_subclass(torch.Tensor), self._offset).mul_(self._scale)
        return normalize(to_dtype(to_image(image)))


def _eval_steps(crop_size: int, resize_size: int) -> list:
    return [T.Resize(resize_size, antialias=True), T.CenterCrop(crop_size)]


class ClassificationPresetEval(_Preset):
    """Resize the short side to ``resize_size``, center-crop ``crop_size``, normalise."""

    def __init__(
        self,
        crop_size: int,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        resize_size = resize_size or round(crop_size / 0.875)
        # Resize makes the short side resize_size: any decode at least that large gives the same output.
        super().__init__(_eval_steps(crop_size, resize_size), mean, std, decode_size=resize_size)


class ClassificationPresetTrain(_Preset):
    """The training pipeline for one of the ``Augment`` recipes."""

    def __init__(
        self,
        crop_size: int,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augment = "imagenet",
        padding: int = 4,
    ) -> None:
        if augment == "none":
            resize_size = resize_size or round(crop_size / 0.875)
            super().__init__(_eval_steps(crop_size, resize_size), mean, std, decode_size=resize_size)
            return
        if augment == "imagenet":
            steps = [T.RandomResizedCrop(crop_size, scale=RRC_SCALE, ratio=RRC_RATIO, antialias=True)]
            # Decoded with a short side of at least this, even the smallest crop is >= crop_size
            # pixels wide and high, so every crop is still scaled down, as from the full image.
            decode_size = math.ceil(crop_size / _RRC_MIN_SIDE)
        elif augment == "crop_flip":
            steps = [T.RandomCrop(crop_size, padding=padding, pad_if_needed=True)]
            decode_size = 0  # crops pixels 1:1: needs the full image
        elif augment == "flip":
            steps = [T.Resize(resize_size or crop_size, antialias=True), T.CenterCrop(crop_size)]
            decode_size = resize_size or crop_size
        else:
            raise ValueError(f"unknown augment {augment!r}; expected one of imagenet, crop_flip, flip, none")
        super().__init__(steps + [T.RandomHorizontalFlip()], mean, std, decode_size)
