"""Shared fixtures: tiny image folders written per test, and an in-process CLI runner."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

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
