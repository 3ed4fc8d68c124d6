"""Shared fixtures: tiny image folders written per test, and an in-process CLI runner."""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_transfer.data.shapes import SHAPES, draw_shape

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Keep the CPU tests quiet and single-threaded enough not to fight over 2 cores.
os.environ.setdefault("PYTHONWARNINGS", "ignore")


def write_image_folder(root: Path, per_class: int = 8, size: int = 32, classes=SHAPES, seed: int = 0) -> Path:
    """``root/<class>/*.png`` with learnable shape pictures."""
    rng = random.Random(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        shape = SHAPES[list(classes).index(name) % len(SHAPES)]
        for i in range(per_class):
            draw_shape(shape, size, rng).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """A tiny hymenoptera-style ``train/`` + ``val/`` layout with three classes of 32 px images."""
    root = tmp_path / "split"
    write_image_folder(root / "train", per_class=8, seed=1)
    write_image_folder(root / "val", per_class=4, seed=2)
    return root


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """A tiny folder of class folders (no train/val split)."""
    return write_image_folder(tmp_path / "classes", per_class=10, seed=3)


def tiny_demo_args(tmp_path: Path, *extra: str) -> list[str]:
    """Arguments that run configs/demo.yaml on a tiny generated shapes set inside ``tmp_path``."""
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(tmp_path / "shapes"),
        "--data.train_per_class",
        "16",
        "--data.val_per_class",
        "8",
        "--data.batch_size",
        "16",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.log_every_n_steps",
        "1",
        *extra,
    ]


@pytest.fixture
def run_cli():
    """Run ``python -m lit_transfer`` in this process (much faster than a subprocess per call)."""
    from lit_transfer.cli import main

    def run(*args: str):
        return main(list(args))

    return run


def add_bad_files(folder: Path) -> dict[str, Path]:
    """A truncated JPEG, a zero-byte file and a text file with an image extension."""
    rng = np.random.default_rng(1)
    good = folder / "good.jpg"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(good, quality=90)
    data = good.read_bytes()
    bad = {"truncated": folder / "truncated.jpg", "empty": folder / "empty.jpg", "text": folder / "notes.png"}
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not a picture\n")
    return bad


def add_decompression_bomb(folder: Path) -> Path:
    """A PNG that claims 20000 x 20000 pixels (over Pillow's decompression-bomb limit) in a few bytes."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 20000, 20000)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path = folder / "bomb.png"
    path.write_bytes(bytes(data))
    return path
