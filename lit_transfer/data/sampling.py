"""Orders of a data set: a shuffle (and the DataLoader's own seed) that depends only on (seed, epoch)
for training, or a class-balanced draw that does too, and one fixed mixed order for evaluation."""

from __future__ import annotations

from collections import Counter
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


class BalancedEpochSampler(EpochShuffleSampler):
    """An epoch of as many draws as there are images, with replacement, each class as likely as any
    other (torch's ``WeightedRandomSampler`` with weights 1 / images of the class), drawn from
    ``(seed, epoch)`` alone as ``EpochShuffleSampler``'s order is, so a resumed run draws the same."""

    def __init__(self, labels: list[int], seed: int) -> None:
        super().__init__(len(labels), seed)
        counts = Counter(labels)
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_seed(2 * (self.seed + self.epoch) + 1))
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist())


class MixedOrderSampler(Sampler[int]):
    """One fixed random order, the same for every run, epoch and machine.

    Folder data sets list their images class by class, so the first validation batches would hold one
    class only: a partial validation (``--trainer.limit_val_batches``) would score that class alone.
    In this order every part of the set mixes the classes as the whole set does. The metrics of a full
    pass do not depend on the order.
    """

    SEED = 0

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.SEED)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())
