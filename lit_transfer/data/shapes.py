"""The offline demo data set: coloured circles, squares and triangles, generated on first use."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from lit_transfer.data.folder import ImageFolderDataModule
from lit_transfer.files import publish, staging_folder

SHAPES = ("circle", "square", "triangle")


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def _distinct_colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    while True:
        bg, fg = _random_colour(rng), _random_colour(rng)
        if sum(abs(a - b) for a, b in zip(bg, fg)) > 150:
            return bg, fg


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One ``size`` x ``size`` picture of ``shape`` at a random size, place and colour."""
    bg, fg = _distinct_colours(rng)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    extent = rng.randint(size * 3 // 8, size * 7 // 8)
    x0, y0 = rng.randint(0, size - extent), rng.randint(0, size - extent)
    box = (x0, y0, x0 + extent - 1, y0 + extent - 1)
    if shape == "circle":
        draw.ellipse(box, fill=fg)
    elif shape == "square":
        draw.rectangle(box, fill=fg)
    else:
        draw.polygon([(x0 + extent / 2, y0), (x0, y0 + extent - 1), (x0 + extent - 1, y0 + extent - 1)], fill=fg)
    return img


def generate_shapes(root: str | Path, train_per_class: int, val_per_class: int, image_size: int, seed: int) -> Path:
    """Write ``root/{train,val}/<shape>/*.png`` unless it is already there; deterministic from ``seed``.

    The set is written to a temporary folder and renamed into place, so an interrupted run never
    leaves a half-written data set behind (and parallel processes do not clash).
    """
    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root
    rng = random.Random(seed)
    with staging_folder(root) as tmp:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for shape in SHAPES:
                folder = tmp / "shapes" / split / shape
                folder.mkdir(parents=True)
                for i in range(count):
                    draw_shape(shape, image_size, rng).save(folder / f"{shape}_{i:04d}.png")
        publish(tmp / "shapes", root)
    return root


class ShapesDataModule(ImageFolderDataModule):
    """ImageFolder data module over the generated shapes; the folder is written on first use.

    Args:
        root: folder of the data set (``train/`` and ``val/``, a folder per shape); written there
            when missing, used as it is when present.
        batch_size: images per batch (per device), for training and evaluation alike.
        num_workers: DataLoader worker processes; 0 loads in the main process. Lowered to the
            number of CPUs this process may use.
        image_size: side in pixels of the pictures generated and of the images the net gets.
        train_per_class: training pictures generated per shape (only when ``root`` is written).
        val_per_class: validation pictures generated per shape (only when ``root`` is written).
        seed: seed of the generator; the same seed writes the same pictures.
        predict_root: image file or folder of images (searched recursively) to predict; the class
            names then come from the checkpoint and nothing is generated.
    """

    def __init__(
        self,
        root: str = "data/shapes",
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 32,
        train_per_class: int = 400,
        val_per_class: int = 100,
        seed: int = 0,
        predict_root: str | None = None,
    ) -> None:
        fixed = {"resize_size": image_size, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "augment": "flip"}
        super().__init__(root, batch_size, num_workers, image_size=image_size, predict_root=predict_root, **fixed)
        if not predict_root:  # predicting names its classes from the checkpoint, no data needed
            generate_shapes(root, train_per_class, val_per_class, image_size, seed)
