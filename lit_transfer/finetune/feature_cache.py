"""Training a frozen backbone's head on features computed once.

With ``finetune: feature_extractor`` the backbone never changes, and with ``augment: none`` neither
do the training images; so every epoch would decode the same images and push them through the same
backbone to get the same features. ``FineTuneClassifier(feature_cache=True)`` computes them once,
when the fit starts (after the pretrained weights are loaded, or the checkpoint restored), for the
training and the validation images, and the epochs then train and validate the head on them: the
data module's training and validation sets are swapped for the features for the length of the fit
(same order, batch size and shuffling, since its own loaders serve them), and the model's forward
runs only the head (``ClassifierNet.forward_head``). The metrics are the same, and checkpoints hold
the whole net, backbone included, as always.

The features are computed with the backbone in eval mode, as a frozen backbone runs anyway
(BatchNorm layers on their running statistics); a backbone with dropout before the head (AlexNet's
classifier) would apply it in a fit without the cache, so there the two differ by that dropout.

Nothing in Lightning or torchvision does this; it is a precomputed ``TensorDataset``.
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset, Subset, TensorDataset

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.errors import UserError
from lit_transfer.nets.base import ClassifierNet


class FeatureCache:
    """Swaps a data module's training and validation sets for the net's features while a fit runs."""

    def __init__(self) -> None:
        self.active = False
        self._data: ClassificationDataModule | None = None
        self._images: tuple[Dataset, Dataset] | None = None

    def attach(self, trainer: Trainer, net: ClassifierNet, device: torch.device) -> None:
        data = trainer.datamodule
        if not isinstance(data, ClassificationDataModule):
            raise UserError(
                "feature_cache needs one of lit_transfer's data modules (train and validation sets to cache)"
            )
        if data.randomly_augmented:
            raise UserError(
                f"feature_cache needs training images that are the same every epoch: set --data.augment none "
                f"(now {data.augment!r}) and no --data.augmentations ({len(data.augmentations)} now), or leave the cache off"
            )
        start = time.perf_counter()
        self._data, self._images = data, (data.train_set, data.val_set)
        train, val = (
            compute_features(net, data, dataset, trainer, device, label)
            for dataset, label in zip(self._images, ("training", "validation"))
        )
        data.train_set, data.val_set = train, val
        # A scheduler that asks for the run's step count (Trainer.estimated_stepping_batches) made
        # Lightning build the training loader over the images already; it must be built again over the
        # features. Lightning has no public call to drop a loader it built, hence its private field.
        trainer.fit_loop._combined_loader = None
        self.active = True
        rank_zero_info(
            f"feature cache: computed the frozen backbone's features {tuple(train.tensors[0].shape[1:])} of "
            f"{len(train)} training and {len(val)} validation images in {time.perf_counter() - start:.1f} s; "
            "the epochs train the head on them"
        )

    def detach(self) -> None:
        """Give the data module its images back."""
        if self._data is not None and self._images is not None:
            self._data.train_set, self._data.val_set = self._images
        self.active, self._data, self._images = False, None, None


@torch.no_grad()
def compute_features(
    net: ClassifierNet,
    data: ClassificationDataModule,
    dataset: Dataset,
    trainer: Trainer,
    device: torch.device,
    label: str = "",
) -> TensorDataset:
    """``(features, label)`` for each item of ``dataset``, in order, read through the data module's own
    evaluation loader (its workers and batch size); kept on the CPU. Says how far it is at every
    quarter, as this can take minutes before the first epoch starts.

    Under DDP each process computes every n-th item's features, and the processes then exchange them:
    each needs them all, as every epoch deals the training set out anew."""
    processes = trainer.world_size if len(dataset) >= trainer.world_size else 1  # too few items to share out
    share = Subset(dataset, range(trainer.global_rank, len(dataset), processes)) if processes > 1 else dataset
    was_training = net.training
    net.eval()
    features, labels = [], []
    loader = data.make_loader(share)
    start, said = time.perf_counter(), 0
    try:
        for batch, (x, y) in enumerate(loader, start=1):
            with trainer.precision_plugin.forward_context():
                features.append(net.forward_features(data.normalize(x.to(device))).float().cpu())
            labels.append(y)
            quarter = 4 * batch // len(loader)
            if quarter > said:
                said = quarter
                done = min(len(dataset), processes * sum(len(t) for t in labels))
                rank_zero_info(
                    f"feature cache: {label} images {done}/{len(dataset)} ({time.perf_counter() - start:.0f} s)"
                )
    finally:
        net.train(was_training)
    mine = torch.cat(features), torch.cat(labels)
    return TensorDataset(*(_interleave(trainer, t, len(dataset)) for t in mine) if processes > 1 else mine)


def _interleave(trainer: Trainer, mine: torch.Tensor, total: int) -> torch.Tensor:
    """Every process's ``mine`` (process k's holds items k, k + n, k + 2n, ...), gathered back into the
    items' order, on the CPU. The shares differ by one item at most; all_gather needs equal ones, so each
    is padded. The exchange goes through the device (NCCL and HCCL gather device tensors)."""
    processes, longest = trainer.world_size, -(-total // trainer.world_size)
    padded = torch.cat([mine, mine.new_zeros((longest - len(mine), *mine.shape[1:]))])
    gathered = trainer.strategy.all_gather(padded.to(trainer.strategy.root_device)).cpu()  # (processes, longest, ...)
    return gathered.transpose(0, 1).reshape(processes * longest, *mine.shape[1:])[:total]
