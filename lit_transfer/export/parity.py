"""Whether an exported file computes what the checkpoint's net computes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Logits may differ by float rounding (another operator order, fused kernels): at most this share of
# the largest logit's magnitude, and never less than ABSOLUTE_TOLERANCE.
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_TOLERANCE = 1e-4


@dataclass
class Parity:
    """How the exported file's logits compare with the net's over some images."""

    images: int = 0
    same_top1: int = 0
    max_difference: float = 0.0
    tolerance: float = ABSOLUTE_TOLERANCE

    @property
    def holds(self) -> bool:
        return self.same_top1 == self.images and self.max_difference <= self.tolerance

    def add(self, expected: Tensor, got: Tensor) -> None:
        self.images += len(expected)
        self.same_top1 += int((expected.argmax(1) == got.argmax(1)).sum())
        self.max_difference = max(self.max_difference, float((expected - got).abs().max()))
        scale = float(expected.abs().max())
        self.tolerance = max(self.tolerance, ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * scale)

    def describe(self) -> str:
        share = 100 * self.same_top1 / max(self.images, 1)
        return (
            f"top-1 agrees on {self.same_top1} of {self.images} images ({share:.1f} %), largest logit difference "
            f"{self.max_difference:.2g} (tolerance {self.tolerance:.2g})"
        )


def compare(reference, exported, batches) -> Parity:
    """Run ``reference`` (the net, on its logits) and ``exported`` on each ``uint8`` batch."""
    parity = Parity()
    for images in batches:
        with torch.no_grad():
            parity.add(reference(images), exported(images))
    return parity
