"""LightningDataModules and transform presets."""

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.data.cifar import CIFARDataModule
from lit_transfer.data.folder import ImageFolderDataModule
from lit_transfer.data.mnist import MNISTDataModule
from lit_transfer.data.shapes import ShapesDataModule

__all__ = [
    "CIFARDataModule",
    "ClassificationDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "ShapesDataModule",
]
