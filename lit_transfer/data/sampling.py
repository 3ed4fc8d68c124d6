"""A shuffle, and the DataLoader's own seed, that depend only on (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def _seed(value: int) -> int:
    # An unseeded run's torch.initial_seed() can be close to 2**64, past what manual_seed takes.
    return value % 2**63


class EpochShuffleSampler(Sampler[int]):
    """Random order per epoch from ``seed`` and the epoch number alone.

    torch's RandomSampler, and the DataLoader's draw of its workers' base seed, use the global RNG
    at whatever moment Lightning creates the iterator; that moment differs between a run resumed at
    an epoch boundary and one never stopped, so they would see different orders and augmentations.
    Here the order comes from a private generator, and ``loader_generator`` (give it to the
    DataLoader) is reseeded every epoch. Lightning calls ``set_epoch`` on every training sampler at
    the start of each epoch, as it does for DistributedSampler.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.loader_generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader_generator.manual_seed(_seed(2 * (self.seed + epoch)))

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_seed(2 * (self.seed + self.epoch) + 1))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())
