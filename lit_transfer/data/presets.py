"""Named transform presets, after torchvision's ``references/classification/presets.py``.

Every data module builds its transforms here instead of spelling them out at each call site.
The presets take PIL images and ``uint8`` tensors alike and give ``uint8`` tensors; the data modules
give them tensors (``lit_transfer.data.images.load_image``): torch's uint8 resize is faster than
PIL's. Each preset says in ``decode_size`` how small a JPEG may be decoded (DCT scaling) without
losing detail it uses. ``lit_transfer.preprocessing.Normalize`` turns a batch of them into the net's
float input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from lit_transfer.preprocessing import eval_resize_size

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


# What a PIL image or a float tensor in 0..1 goes through first; the loaders' uint8 tensors skip it.
_TO_UINT8 = T.Compose([T.ToImage(), T.ToDtype(torch.uint8, scale=True)])


class _Preset(T.Compose):
    """``steps`` on a ``uint8`` image, giving a ``uint8`` tensor; ``decode_size`` says how small a
    JPEG may be decoded without changing what the steps make of it (0: full size). Normalisation is
    left to ``Normalize``, once per batch."""

    def __init__(self, steps: list, decode_size: int) -> None:
        super().__init__(steps)
        self.decode_size = decode_size

    def forward(self, image) -> torch.Tensor:
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8):
            image = _TO_UINT8(image)
        return super().forward(image).as_subclass(torch.Tensor)


# The two random steps of the training presets are torchvision's, drawing the same random numbers
# (the same crops and flips for a seed), with a ``forward`` for the one uint8 image they get here:
# v2's generic one flattens and checks its inputs first, about 35 us an image of the ~1 ms a photo
# takes (benchmarks/input_pipeline.py).
class _RandomResizedCrop(T.RandomResizedCrop):
    """Copies the crop into one compact block of HWC memory before resizing it: torch's uint8
    antialiased resize takes its fast path only on such a block, so a crop of a decoded photo (a
    strided view into it) is about 20 % faster resized this way, copy included."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image, self.make_params([image]))

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        crop = F.crop(inpt, params["top"], params["left"], params["height"], params["width"])
        compact = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        return F.resize(compact, self.size, self.interpolation, antialias=self.antialias)


class _RandomHorizontalFlip(T.RandomHorizontalFlip):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.horizontal_flip(image) if torch.rand(1) < self.p else image


class ToChannels(nn.Module):
    """Gray images repeated into 3 channels, or RGB ones turned gray (ITU-R 601-2 luma, as torchvision's
    ``Grayscale``), to give ``channels``; images that have them pass unchanged (torchvision's
    ``Grayscale`` converts every image, RGB into gray RGB too)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-3] == self.channels:
            return image
        return F.rgb_to_grayscale(image, num_output_channels=self.channels)


def _eval_steps(crop_size: int, resize_size: int, interpolation: str) -> list:
    return [T.Resize(resize_size, InterpolationMode(interpolation), antialias=True), T.CenterCrop(crop_size)]


class ClassificationPresetEval(_Preset):
    """Resize the short side to ``resize_size`` (with ``interpolation``), center-crop ``crop_size``, give
    ``channels`` (1: gray, 3: RGB)."""

    def __init__(
        self, crop_size: int, resize_size: int | None = None, interpolation: str = "bilinear", channels: int = 3
    ) -> None:
        resize_size = eval_resize_size(crop_size, resize_size)
        steps = [*_eval_steps(crop_size, resize_size, interpolation), ToChannels(channels)]
        # Resize makes the short side resize_size: any decode at least that large gives the same output.
        super().__init__(steps, decode_size=resize_size)


class ClassificationPresetTrain(_Preset):
    """The training pipeline for one of the ``Augment`` recipes, then ``augmentations`` (any
    torchvision.transforms.v2 transforms that take a ``uint8`` image: RandAugment, TrivialAugmentWide,
    ColorJitter, RandomErasing, ...), giving ``channels`` (1: gray, 3: RGB)."""

    def __init__(
        self,
        crop_size: int,
        resize_size: int | None = None,
        augment: Augment = "imagenet",
        padding: int = 4,
        interpolation: str = "bilinear",
        augmentations: Sequence[nn.Module] = (),
        channels: int = 3,
    ) -> None:
        mode = InterpolationMode(interpolation)
        # The channels first, so the added augmentations (ColorJitter, RandAugment) see the net's.
        if augment == "none":
            resize_size = eval_resize_size(crop_size, resize_size)
            steps = _eval_steps(crop_size, resize_size, interpolation)
            super().__init__([*steps, ToChannels(channels), *augmentations], decode_size=resize_size)
            return
        if augment == "imagenet":
            steps = [_RandomResizedCrop(crop_size, RRC_SCALE, RRC_RATIO, mode, antialias=True)]
            # Decoded with a short side of at least this, even the smallest crop is >= crop_size
            # pixels wide and high, so every crop is still scaled down, as from the full image.
            decode_size = math.ceil(crop_size / _RRC_MIN_SIDE)
        elif augment == "crop_flip":
            steps = [T.RandomCrop(crop_size, padding=padding, pad_if_needed=True)]
            decode_size = 0  # crops pixels 1:1: needs the full image
        elif augment == "flip":
            steps = [T.Resize(resize_size or crop_size, mode, antialias=True), T.CenterCrop(crop_size)]
            decode_size = resize_size or crop_size
        else:
            raise ValueError(f"unknown augment {augment!r}; expected one of imagenet, crop_flip, flip, none")
        super().__init__([*steps, _RandomHorizontalFlip(), ToChannels(channels), *augmentations], decode_size)
