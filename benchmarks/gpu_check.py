"""Accelerator check (issue 6): the demo and the CIFAR-10 AlexNet recipe on one accelerator, full
precision against mixed precision, in one run.

For each task and precision it trains a few limited epochs through the CLI (``LitTransferCLI``) and
reports the last val/acc and the training images/second of the last epoch (data loading included,
validation excluded; the device is synchronised before each clock reading). Printed as a table and
written to ``benchmarks/results/gpu_check.json``, with the mixed/full images-per-second ratio.

    benchmarks/gpu_check.sh                                       # GPU: 32-true vs 16-mixed
    python -m benchmarks.gpu_check --accelerator gpu --precision 32-true bf16-mixed --channels-last
    python -m benchmarks.gpu_check --accelerator cpu --precision 32-true --limit-batches 5   # dry run

The CIFAR row uses ``configs/cifar10_alexnet.yaml`` (AlexNet-32, SGD, OneCycleLR) on the generated
shapes at 32 px unless ``--cifar-folder`` names an ImageFolder root (``train/`` and ``val/``) of real
CIFAR-10 images: no download, so it runs on a machine without internet.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from benchmarks.common import REPO, add_out_option, benchmark_parser, format_table, publish, versions


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochThroughput(Callback):
    """Training images/second of each epoch. Written by hand: Lightning's ThroughputMonitor reports
    through the logger only, and this script needs the numbers themselves."""

    def __init__(self) -> None:
        self.per_epoch: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.images, self.start = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        # The epoch's validation runs inside the training epoch (before on_train_epoch_end): stop here.
        if trainer.sanity_checking or not hasattr(self, "start") or self.images == 0:
            return
        _sync(pl_module.device)
        self.per_epoch.append(self.images / (time.perf_counter() - self.start))
        self.images = 0


TASKS = {
    "demo": ["--config", str(REPO / "configs" / "demo.yaml")],
    "cifar10_alexnet": [
        "--config",
        str(REPO / "configs" / "cifar10_alexnet.yaml"),
        "--data",
        "lit_transfer.data.ShapesDataModule",
        "--data.image_size",
        "32",
        "--data.batch_size",
        "128",
    ],
}


def run(task: str, precision: str, args: argparse.Namespace, workdir: Path) -> dict:
    from lit_transfer.cli import LitTransferCLI

    flags = list(TASKS[task])
    if task == "cifar10_alexnet" and args.cifar_folder:
        flags += [
            "--data",
            "lit_transfer.data.ImageFolderDataModule",
            "--data.root",
            args.cifar_folder,
            "--data.image_size",
            "32",
            "--data.resize_size",
            "32",
            "--data.batch_size",
            "128",
        ]
    else:
        flags += ["--data.root", args.shapes_root]
    flags += [
        "--data.num_workers",
        str(args.num_workers),
        "--trainer.accelerator",
        args.accelerator,
        "--trainer.devices",
        str(args.devices),
        "--trainer.precision",
        precision,
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.limit_train_batches",
        str(args.limit_batches),
        "--trainer.limit_val_batches",
        str(args.limit_batches),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(workdir / f"{task}-{precision}"),
        "--channels_last.enabled",
        str(args.channels_last).lower(),
    ]
    cli = LitTransferCLI(args=flags, run=False)
    throughput = EpochThroughput()
    cli.trainer.callbacks.append(throughput)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - start
    return {
        "task": task,
        "accelerator": args.accelerator,
        "device": str(cli.trainer.strategy.root_device),
        "precision": precision,
        "channels_last": args.channels_last,
        "val_acc": round(float(cli.trainer.callback_metrics["val/acc"]), 4),
        "images_per_s": round(throughput.per_epoch[-1], 1) if throughput.per_epoch else None,
        "wall_s": round(wall, 1),
    }


def print_table(rows: list[dict], ratios: dict) -> None:
    cells = [
        (
            r["task"],
            r["device"],
            r["precision"],
            r["channels_last"],
            f"{r['val_acc']:.4f}",
            None if r["images_per_s"] is None else f"{r['images_per_s']:.1f}",
            f"{r['wall_s']:.1f}",
        )
        for r in rows
    ]
    columns = ["task", "device", "precision", "ch_last", "val/acc", "images/s", "wall s"]
    print(format_table(columns, cells, widths=(16, 8, 11, 7, 7, 9, 7), align="<<<<>>>", gap=" ", rule="full"))
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x images/s")


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.gpu_check", __doc__)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--precision", nargs="+", default=["32-true", "16-mixed"], help="the first is the baseline")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-batches", type=int, default=50, help="training and validation batches per epoch")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--cifar-folder", help="ImageFolder root (train/, val/) of real CIFAR-10 images")
    parser.add_argument(
        "--shapes-root", default=str(REPO / "data" / "shapes"), help="the generated shapes (written on first use)"
    )
    add_out_option(parser, "gpu_check.json")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as workdir:
        for task in args.tasks:
            for precision in args.precision:
                rows.append(run(task, precision, args, Path(workdir)))
    ratios = {}
    for task in args.tasks:
        base, *others = [r for r in rows if r["task"] == task]
        for other in others:
            if base["images_per_s"] and other["images_per_s"]:
                ratios[f"{task} {other['precision']} / {base['precision']}"] = (
                    other["images_per_s"] / base["images_per_s"]
                )
    report = {
        "rows": rows,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "versions": versions(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    # the table prints the ratios unrounded, as measured
    return publish(report, args.out, lambda _: print_table(rows, ratios))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
