"""Task 3 (cats vs dogs, ResNet50): a frozen backbone's epochs with and without the feature cache.

Both runs are the task config (``configs/catsdogs_resnet50.yaml``) through our CLI in this process,
one after the other, with ``finetune: feature_extractor`` and ``augment: none``, the same seed, data,
split, batch size and initial weights; they differ only in ``--model.feature_cache``. Measured with a
callback: each epoch from its start to its end (training and validation, data loading included), and
the time from the fit's start to the first epoch (where the cache is computed). Checkpoint writing is
off in both (it costs the same in both and is not what is compared). Printed and written to
``benchmarks/results/feature_cache.json``: the epoch times, the ratio of the median epoch time after
the first epoch, and the final metrics and head weights of both runs (they should agree).

    python -m benchmarks.feature_cache --data ../shared/data                      # 64 px, 3 epochs each
    python -m benchmarks.feature_cache --data ../shared/data --image-size 128 --epochs 4

Data: ``<data>/dogs_vs_cats_kaggle_subset/train`` (Kaggle's flat ``cat.0.jpg`` layout, 2002 photos;
split 1602/400). When absent, small generated images stand in (timing only). No pretrained weights
can be downloaded here, so the backbone is randomly initialised: that changes the accuracy, not the
time. A smaller image size than the recipe's 224 px keeps the uncached run short on a CPU; the
backbone's share of an epoch, and so the ratio, only grows with the image size.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback
from PIL import Image

from benchmarks import common
from lit_transfer.cli import main as cli_main

CONFIG = common.REPO / "configs" / "catsdogs_resnet50.yaml"
SUBSET = Path("dogs_vs_cats_kaggle_subset") / "train"


class EpochTimer(Callback):
    """Seconds from the fit's start to the first epoch, and of every epoch (validation included)."""

    def __init__(self) -> None:
        self.fit_start = self.epoch_start = 0.0
        self.setup_seconds: float | None = None
        self.epoch_seconds: list[float] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = time.perf_counter()
        if self.setup_seconds is None:
            self.setup_seconds = self.epoch_start - self.fit_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)


COLOURS = {"cat": (200, 80, 40), "dog": (40, 160, 200)}


def write_synthetic(root: Path, per_class: int = 200) -> Path:
    """A flat ``cat.<n>.jpg`` / ``dog.<n>.jpg`` folder of plain-coloured pictures: timing only."""
    return common.write_flat_cats_dogs(
        root, per_class, lambda label, n: Image.new("RGB", (320 + n % 50, 240), COLOURS[label])
    )


def run(root: Path, cached: bool, args, workdir: Path) -> dict:
    timer_path = f"{__name__}.EpochTimer" if __name__ != "__main__" else "benchmarks.feature_cache.EpochTimer"
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--model.weights",
            "null",
            "--model.finetune",
            "feature_extractor",
            "--model.feature_cache",
            str(cached).lower(),
            "--data.root",
            str(root),
            "--data.augment",
            "none",
            "--data.num_workers",
            str(args.num_workers),
            "--data.image_size",
            str(args.image_size),
            "--data.resize_size",
            str(round(args.image_size / 0.875)),
            "--trainer.max_epochs",
            str(args.epochs),
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.default_root_dir",
            str(workdir / ("cached" if cached else "plain")),
            "--checkpoint.save_top_k",
            "0",
            "--last_checkpoint.save_top_k",
            "0",
            "--trainer.callbacks+",
            json.dumps({"class_path": timer_path}),
        ]
    )
    timer = next(c for c in cli.trainer.callbacks if type(c).__name__ == "EpochTimer")
    metrics = {
        k: round(float(v), 4) for k, v in cli.trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
    }
    later = timer.epoch_seconds[1:] or timer.epoch_seconds
    return {
        "feature_cache": cached,
        "train_images": len(cli.datamodule.train_set),
        "val_images": len(cli.datamodule.val_set),
        "seconds_before_first_epoch": round(timer.setup_seconds, 3),
        "epoch_seconds": [round(s, 3) for s in timer.epoch_seconds],
        "median_epoch_seconds_after_first": round(statistics.median(later), 4),
        "metrics": metrics,
        "head": cli.model.net.get_classifier().weight.detach().clone(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = common.benchmark_parser("benchmarks.feature_cache", __doc__)
    common.add_data_option(parser, SUBSET)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    common.add_workers_option(parser)
    common.add_out_option(parser, "feature_cache.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root, note = common.real_or_synthetic(
            args.data,
            SUBSET,
            lambda: write_synthetic(Path(tmp) / "flat"),
            real="Kaggle dogs vs cats subset",
            synthetic="generated pictures (no {subset} under {data}): timing only",
        )
        plain = run(root, False, args, Path(tmp))
        cached = run(root, True, args, Path(tmp))

    head_difference = (plain.pop("head") - cached.pop("head")).abs().max().item()
    report = {
        "benchmark": "feature_cache",
        "data": note,
        "net": "resnet50 (random init), frozen but for fc",
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": 32,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        "versions": common.versions(),
        "plain": plain,
        "cached": cached,
        "ratio_median_epoch_after_first": round(
            plain["median_epoch_seconds_after_first"] / cached["median_epoch_seconds_after_first"], 1
        ),
        "head_weights_max_abs_difference": head_difference,
    }
    return common.publish(report, args.out, print_table)


def print_table(report: dict) -> None:
    plain, cached = report["plain"], report["cached"]
    print(
        f"\nResNet50 frozen backbone, {report['image_size']} px, {plain['train_images']} train + {plain['val_images']} val images, "
        f"batch {report['batch_size']}, {report['epochs']} epochs, {report['torch_threads']} threads"
    )
    times = [("before the first epoch (s)", plain["seconds_before_first_epoch"], cached["seconds_before_first_epoch"])]
    times += [(f"epoch {i} (s)", a, b) for i, (a, b) in enumerate(zip(plain["epoch_seconds"], cached["epoch_seconds"]))]
    times += [
        (
            "median epoch after the first (s)",
            plain["median_epoch_seconds_after_first"],
            cached["median_epoch_seconds_after_first"],
        )
    ]
    rows = [(label, f"{a:.3f}", f"{b:.3f}", f"{a / b if b else float('nan'):.1f}") for label, a, b in times]
    # the metrics: no ratio column
    rows += [
        (name, f"{plain['metrics'][name]:.4f}", f"{cached['metrics'].get(name, float('nan')):.4f}")
        for name in sorted(plain["metrics"])
    ]
    print(common.format_table(["", "no cache", "cache", "ratio"], rows, widths=(34, 12, 12, 10), gap="", rule=None))
    print(f"head weights, max abs difference: {report['head_weights_max_abs_difference']:.2e}")


if __name__ == "__main__":
    main()
