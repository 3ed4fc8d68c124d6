"""Shared fixtures: tiny image folders written per test, and an in-process CLI runner."""

from __future__ import annotations

import io
import os
import random
import struct
import threading
import zlib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from PIL import Image

from lit_transfer.data.shapes import SHAPES, draw_shape
from lit_transfer.models import FineTuneClassifier
from lit_transfer.nets import TorchvisionNet

REPO = Path(__file__).resolve().parents[1]
# Real data sets for the end-to-end tests, skipped when absent: $LIT_TRANSFER_DATA, else ../shared/data.
SHARED_DATA = Path(os.environ.get("LIT_TRANSFER_DATA") or REPO.parent / "shared" / "data")
CATSDOGS_CONFIG = str(REPO / "configs" / "catsdogs_resnet50.yaml")
HYMENOPTERA_CONFIG = str(REPO / "configs" / "hymenoptera_alexnet.yaml")

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


def run_dir_args(root: Path) -> list[str]:
    """Trainer flags: logs, checkpoints and predictions under ``root``, no progress bar."""
    return ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]


def run_folders(root: Path) -> list[Path]:
    """The fit folders under ``root`` (``lightning_logs/<run name>/version_<n>``), in version order."""
    return sorted((root / "lightning_logs").glob("*/version_*"), key=lambda p: (p.parent.name, int(p.name[8:])))


def run_folder(root: Path, version: int = 0) -> Path:
    """The one fit folder ``version_<version>`` under ``root``, whatever the run's name."""
    (folder,) = (root / "lightning_logs").glob(f"*/version_{version}")
    return folder


def last_checkpoint(root: Path) -> Path:
    """``last.ckpt`` of the most recent fit under ``root``."""
    return max(root.glob("lightning_logs/*/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)


def written(root: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` anywhere under ``root`` (predict writes into a run's folder)."""
    return sorted(root.rglob(pattern))


def exit_message(run_cli, capsys, *args: str) -> str:
    """The one error line of a command that must stop with exit status 2 (and no traceback)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(*args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("lit_transfer: error:") and not any("Traceback" in line for line in err)
    return err[-1]


# The frozen backbone trained on cached features: the flags every such run gives.
FROZEN_CACHED = ("--model.finetune", "feature_extractor", "--data.augment", "none", "--model.feature_cache", "true")


def quiet_run_args(root: Path) -> list[str]:
    """``run_dir_args`` and no model summary either."""
    return [*run_dir_args(root), "--trainer.enable_model_summary", "false"]


def image_folder_args(
    root: Path, image_size: int, resize_size: int | None = None, num_workers: int = 0, batch_size: int | None = None
) -> list[str]:
    """``--data.*`` flags for the image folder ``root``: sizes, workers and (when given) resize size and batch size."""
    args = ["--data.root", str(root), "--data.image_size", str(image_size)]
    if resize_size is not None:
        args += ["--data.resize_size", str(resize_size)]
    args += ["--data.num_workers", str(num_workers)]
    if batch_size is not None:
        args += ["--data.batch_size", str(batch_size)]
    return args


def short_epoch_args() -> list[str]:
    """Trainer flags: epochs of two training batches and one validation batch."""
    return ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


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
        *quiet_run_args(tmp_path),
        "--trainer.log_every_n_steps",
        "1",
        *extra,
    ]


def simple_cnn_folder_args(root: Path, run: Path, *extra: str, batch_size: int = 4) -> list[str]:
    """An ImageClassifier with an 8-wide SimpleCNN on the image folder ``root`` at 32 px, one epoch, run in ``run``."""
    return [
        "--model",
        "lit_transfer.models.ImageClassifier",
        "--model.net",
        "lit_transfer.nets.SimpleCNN",
        "--model.net.init_args.width",
        "8",
        "--data",
        "lit_transfer.data.ImageFolderDataModule",
        *image_folder_args(root, 32, batch_size=batch_size),
        "--trainer.max_epochs",
        "1",
        *run_dir_args(run),
        *extra,
    ]


def catsdogs_resnet18_args(data_root: Path, run: Path, *extra: str) -> list[str]:
    """``fit`` with the cats/dogs task config: resnet18 from random weights at 32 px, batches of 8, quiet, run in
    ``run``, no best-k checkpoint files."""
    return [
        "fit",
        "--config",
        CATSDOGS_CONFIG,
        "--model.weights",
        "null",
        "--model.net.init_args.name",
        "resnet18",
        *image_folder_args(data_root, 32, 32, batch_size=8),
        *quiet_run_args(run),
        "--checkpoint.save_top_k",
        "0",
        *extra,
    ]


def alexnet_task_args(
    data_root: Path, run: Path, *extra: str, num_workers: int = 0, batch_size: int | None = None
) -> list[str]:
    """``fit`` with the hymenoptera AlexNet task config at 64 px (resized to 72), one epoch, quiet, run in ``run``,
    no checkpoint files (AlexNet's are 0.7 GB)."""
    return [
        "fit",
        "--config",
        HYMENOPTERA_CONFIG,
        *image_folder_args(data_root, 64, 72, num_workers, batch_size),
        "--trainer.max_epochs",
        "1",
        *quiet_run_args(run),
        "--checkpoint.save_top_k",
        "0",
        "--checkpoint.save_last",
        "false",
        *extra,
    ]


def predict_args(ckpt: Path, predict_root: Path, run: Path, *extra: str) -> list[str]:
    """``predict`` from the checkpoint ``ckpt`` alone over ``predict_root`` (a folder or one image), CSV in ``run``."""
    return ["predict", "--ckpt_path", str(ckpt), "--data.predict_root", str(predict_root), *run_dir_args(run), *extra]


def resnet18_feature_extractor(lr: float, **kwargs) -> FineTuneClassifier:
    """Seeds everything, then a 3-class FineTuneClassifier: a frozen resnet18 (random weights), SGD with momentum 0.9."""
    seed_everything(0)
    return FineTuneClassifier(
        net=partial(TorchvisionNet, name="resnet18"),
        num_classes=3,
        finetune="feature_extractor",
        optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9),
        **kwargs,
    )


def quiet_trainer(root: Path, **kwargs) -> Trainer:
    """A Trainer in ``root`` with no logger, no checkpoint files, no progress bar and no model summary."""
    return Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


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


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A local HTTP server (127.0.0.1, a free port) serving ``tmp_path / "served"``."""
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
