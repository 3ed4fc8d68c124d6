"""Task 1 (CIFAR-10, AlexNet-32): our LightningModule + Trainer against the tutorial's plain loop.

Both train the same network from the same initial weights on the same images with the same batch
sizes, SGD and OneCycleLR in this process, taking turns batch by batch (so that both see the same
load from other processes; ``--mode`` runs one after the other instead), and evaluate on the test
images after every epoch. Printed and written to ``benchmarks/results/cifar_loop.json``: training
images/second of each (time per training batch, data loading included, evaluation and
checkpointing excluded), their ratios, wall time (sequential modes only), and the test accuracy
after the last epoch.

    python -m benchmarks.cifar_loop --data ../shared/data              # 2 full epochs
    python -m benchmarks.cifar_loop --data ../shared/data --limit 10   # quick: 10 batches/epoch
    python -m benchmarks.cifar_loop --data ../shared/data --seeds 1 2 3  # accuracy spread over seeds

Data: ``<data>/cifar10_partial_png`` (real CIFAR-10 images, ``train/`` + ``test/``); when absent,
random-pixel images are generated and the accuracies mean nothing (said in the output).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from lightning.pytorch import Callback
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from benchmarks import common
from lit_transfer.data.presets import CIFAR_MEAN, CIFAR_STD
from lit_transfer.nets import AlexNet32

CONFIG = common.REPO / "configs" / "cifar10_alexnet.yaml"
SUBSET = "cifar10_partial_png"
TRAIN_BATCH, EVAL_BATCH = 128, 100
# The recipe: SGD(momentum 0.9, weight decay 5e-4) + OneCycleLR stepped every batch.
MAX_LR = 0.1
ONE_CYCLE = {"max_lr": MAX_LR, "div_factor": 25, "final_div_factor": 1e4, "pct_start": 0.3}


# -- data ------------------------------------------------------------------------------------------
def write_synthetic(root: Path, train_per_class: int = 64, test_per_class: int = 16) -> Path:
    """A CIFAR-shaped ImageFolder of random pixels: timing only, the labels cannot be learnt."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c in range(10):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return root


def warm_file_cache(folder: Path) -> None:
    """Read every image once, so neither side pays the first read from disk."""
    for path in folder.rglob("*.png"):
        path.read_bytes()


# -- the plain PyTorch loop, written the way the tutorial writes it --------------------------------
def plain_loop(folder: Path, epochs: int, limit: int | None, num_workers: int, initial_state: dict, seed: int):
    """A generator: it yields after every training batch so that the other run can take a turn, and
    returns its measurements (``StopIteration.value``). Lines marked "timing" are not the tutorial's."""
    torch.manual_seed(seed)
    transform_train = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )
    transform_test = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    trainset = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform_train)
    testset = torchvision.datasets.ImageFolder(str(folder / "test"), transform=transform_test)
    trainloader = DataLoader(trainset, batch_size=TRAIN_BATCH, shuffle=True, num_workers=num_workers)
    testloader = DataLoader(testset, batch_size=EVAL_BATCH, shuffle=False, num_workers=num_workers)
    steps_per_epoch = min(limit, len(trainloader)) if limit else len(trainloader)

    net = AlexNet32(len(trainset.classes))
    net.load_state_dict(initial_state)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=MAX_LR, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **ONE_CYCLE
    )

    timed: list[tuple[float, int, bool]] = []  # timing: (seconds, images, first of its epoch)
    test_acc = 0.0
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        train_loss, correct, total, batches = 0.0, 0, 0, 0
        tick = time.perf_counter()  # timing
        for batch_idx, (inputs, targets) in enumerate(trainloader):
            if batch_idx >= steps_per_epoch:
                break
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            train_loss += loss.item()
            correct += outputs.argmax(1).eq(targets).sum().item()
            total += targets.size(0)
            batches += 1
            timed.append((time.perf_counter() - tick, targets.size(0), batch_idx == 0))  # timing
            yield  # timing: the other run's turn
            tick = time.perf_counter()  # timing

        net.eval()
        test_correct, test_total = 0, 0
        with torch.no_grad():
            for inputs, targets in testloader:
                test_correct += net(inputs).argmax(1).eq(targets).sum().item()
                test_total += targets.size(0)
        test_acc = test_correct / test_total
        print(
            f"  plain epoch {epoch}: train loss {train_loss / batches:.3f} "
            f"train acc {correct / total:.3f} test acc {test_acc:.3f}",
            flush=True,
        )
    return {"batches": timed, "wall": time.perf_counter() - start, "test_acc": test_acc}


def run_to_end(run) -> dict:
    """Drive a ``plain_loop`` generator to its end and return its measurements."""
    try:
        while True:
            next(run)
    except StopIteration as stop:
        return stop.value


class PlainTurn:
    """One training batch of the plain loop per call, with its own global RNG state: taking turns
    must not change either run's random numbers (shuffling, augmentation, dropout)."""

    def __init__(self, run) -> None:
        self.run = run
        self.rng: torch.Tensor | None = None  # the plain loop seeds itself on its first turn

    def __call__(self) -> None:
        ours_rng = torch.get_rng_state()
        if self.rng is not None:
            torch.set_rng_state(self.rng)
        next(self.run, None)
        self.rng = torch.get_rng_state()
        torch.set_rng_state(ours_rng)

    def finish(self) -> dict:
        if self.rng is not None:
            torch.set_rng_state(self.rng)
        return run_to_end(self.run)


# -- ours: the task config through LitTransferCLI, LightningModule and Trainer -------------------------
class TrainTimer(Callback):
    """Seconds per training batch, measured the same way as in the plain loop; ``between_batches``
    (the plain loop's turn, when interleaved) runs outside the measured time."""

    def __init__(self, between_batches=None) -> None:
        self.batches: list[tuple[float, int, bool]] = []  # (seconds, images, first of its epoch)
        self.between_batches = between_batches

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.tick = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append((time.perf_counter() - self.tick, len(batch[1]), batch_idx == 0))
        if self.between_batches is not None:
            self.between_batches()
        self.tick = time.perf_counter()


def ours(
    folder: Path,
    epochs: int,
    limit: int | None,
    num_workers: int,
    initial_state: dict,
    seed: int,
    extra: list[str],
    between_batches=None,
) -> dict:
    from lit_transfer.cli import LitTransferCLI

    with tempfile.TemporaryDirectory(prefix="cifar_loop-") as workdir:
        args = [
            "--config",
            str(CONFIG),
            # The same images as the plain loop, through our ImageFolder module with CIFAR's values.
            "--data",
            "lit_transfer.data.ImageFolderDataModule",
            "--data.root",
            str(folder),
            "--data.image_size",
            "32",
            "--data.resize_size",
            "32",
            "--data.augment",
            "crop_flip",
            "--data.mean",
            json.dumps(list(CIFAR_MEAN)),
            "--data.std",
            json.dumps(list(CIFAR_STD)),
            "--data.batch_size",
            str(TRAIN_BATCH),
            "--data.eval_batch_size",
            str(EVAL_BATCH),
            "--data.num_workers",
            str(num_workers),
            "--seed_everything",
            str(seed),
            "--trainer.max_epochs",
            str(epochs),
            "--trainer.default_root_dir",
            workdir,
            *(["--trainer.limit_train_batches", str(limit)] if limit else []),
            *extra,
        ]
        argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it also sees our own flags
        try:
            cli = LitTransferCLI(args=args, run=False)
        finally:
            sys.argv = argv
        cli.model.net.load_state_dict(initial_state)
        timer = TrainTimer(between_batches)
        cli.trainer.callbacks.append(timer)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        wall = time.perf_counter() - start
        test_acc = float(cli.trainer.callback_metrics["val/acc"])  # validation here is the test folder
    return {"batches": timer.batches, "wall": wall, "test_acc": test_acc}


def run_pair(folder: Path, args, seed: int) -> tuple[dict, dict]:
    """``(plain, ours)`` measurements of one seed: same initial weights, same seed for both."""
    torch.manual_seed(seed)
    initial_state = {k: v.clone() for k, v in AlexNet32(10).state_dict().items()}
    plain_run = plain_loop(folder, args.epochs, args.limit, args.num_workers, initial_state, seed)
    run_ours = partial(ours, folder, args.epochs, args.limit, args.num_workers, initial_state, seed, args.ours_args)
    if args.mode == "interleaved":
        print(f"seed {seed}: ours and the plain loop take turns after every training batch ...", flush=True)
        turn = PlainTurn(plain_run)
        lit = run_ours(between_batches=turn)
        plain = turn.finish()  # its last evaluation
        lit["wall"] = plain["wall"] = None  # each would include the other's turns
    elif args.mode == "plain-first":
        plain = run_to_end(plain_run)
        lit = run_ours()
    else:
        lit = run_ours()
        plain = run_to_end(plain_run)
    return plain, lit


# -- report ----------------------------------------------------------------------------------------
def summarize(runs: list[dict]) -> dict:
    batches = [b for run in runs for b in run["batches"]]
    seconds = [s for s, _, _ in batches]
    images = sum(n for _, n, _ in batches)
    # The first batch of an epoch waits for the DataLoader workers to start: Lightning starts ours
    # for the first epoch before the epoch begins (and keeps them, persistent_workers), the plain
    # loop starts them in every epoch. Left out, so neither start-up counts for or against either.
    steady = [(s, n) for s, n, first in batches if not first]
    walls = [run["wall"] for run in runs]
    accs = [run["test_acc"] for run in runs]
    return {
        "train_images": images,
        "train_seconds": round(sum(seconds), 3),
        "images_per_second": round(images / sum(seconds), 2),
        "steady_images_per_second": round(sum(n for _, n in steady) / sum(s for s, _ in steady), 2),
        # Less sensitive than the mean to other processes' bursts on a shared machine.
        "median_batch_seconds": round(statistics.median(seconds), 4),
        # train + evaluation (+ checkpoints, ours); only when the runs did not take turns
        "wall_seconds": None if None in walls else round(sum(walls), 2),
        "test_acc_per_seed": [round(a, 4) for a in accs],
        "batch_seconds": [round(s, 4) for s in seconds],
        "test_acc": round(statistics.mean(accs), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = common.benchmark_parser("benchmarks.cifar_loop", __doc__)
    common.add_data_option(parser, SUBSET)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="training batches per epoch (default: all)")
    common.add_workers_option(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one pair of runs per seed")
    parser.add_argument(
        "--mode",
        choices=["interleaved", "plain-first", "ours-first"],
        default="interleaved",
        help="interleaved (default): the runs take turns batch by batch, so both see the same load "
        "from other processes on a shared machine; or one whole run after the other",
    )
    common.add_out_option(parser, "cifar_loop.json")
    parser.add_argument(
        "ours_args",
        nargs="*",
        help="extra CLI flags for our run, after --, e.g. -- --trainer.enable_progress_bar false",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cifar_synthetic-") as tmp:
        folder, data_note = common.real_or_synthetic(
            args.data,
            SUBSET,
            lambda: write_synthetic(Path(tmp)),
            real="CIFAR-10 subset",
            synthetic="SYNTHETIC random-pixel images ({root}): {subset} not found under {data}; accuracies are meaningless",
        )
        warm_file_cache(folder)
        pairs = [run_pair(folder, args, seed) for seed in args.seeds]
    plain, lit = summarize([p for p, _ in pairs]), summarize([o for _, o in pairs])

    report = {
        "benchmark": "cifar_loop",
        "data": data_note,
        "epochs": args.epochs,
        "limit_train_batches": args.limit,
        "num_workers": args.num_workers,
        "seeds": args.seeds,
        "mode": args.mode,
        "ours_args": args.ours_args,
        "torch_threads": torch.get_num_threads(),
        "versions": common.versions(),
        "plain": plain,
        "ours": lit,
        "ratio_images_per_second": round(lit["images_per_second"] / plain["images_per_second"], 3),
        "ratio_steady_images_per_second": round(lit["steady_images_per_second"] / plain["steady_images_per_second"], 3),
        "ratio_median_batch": round(plain["median_batch_seconds"] / lit["median_batch_seconds"], 3),
        "test_acc_difference": round(lit["test_acc"] - plain["test_acc"], 4),
    }
    if args.mode == "interleaved":
        # Batch i of both runs ran back to back, under nearly the same outside load: the median of
        # their ratios is the least noisy speed comparison on a shared machine.
        ratios = [p[0] / o[0] for pp, oo in pairs for p, o in zip(pp["batches"], oo["batches"]) if not p[2]]
        report["ratio_paired_batches_median"] = round(statistics.median(ratios), 3)
    return common.publish(report, args.out, print_table)


def print_table(report: dict) -> None:
    plain, lit = report["plain"], report["ours"]
    rows = [
        ("train images", plain["train_images"], lit["train_images"], ""),
        (
            "train img/s, all batches",
            plain["images_per_second"],
            lit["images_per_second"],
            report["ratio_images_per_second"],
        ),
        (
            "train img/s, steady",
            plain["steady_images_per_second"],
            lit["steady_images_per_second"],
            report["ratio_steady_images_per_second"],
        ),
        ("median s/batch", plain["median_batch_seconds"], lit["median_batch_seconds"], report["ratio_median_batch"]),
        ("median of paired ratios", "", "", report.get("ratio_paired_batches_median", "-")),
        ("wall s (train+eval+ckpt)", plain["wall_seconds"], lit["wall_seconds"], ""),
        ("test acc (mean of seeds)", plain["test_acc"], lit["test_acc"], f"{report['test_acc_difference']:+.4f}"),
    ]
    print(
        f"\nCIFAR-10 AlexNet-32, {report['epochs']} epoch(s), limit {report['limit_train_batches']}, "
        f"seeds {report['seeds']}, {report['num_workers']} workers, {report['torch_threads']} torch threads, "
        f"{report['mode']}"
    )
    print(
        common.format_table(["", "plain loop", "ours", "ours/plain"], rows, widths=(28, 12, 12, 12), gap="", rule=None)
    )
    if len(report["seeds"]) > 1:
        print(f"test acc per seed: plain {plain['test_acc_per_seed']}, ours {lit['test_acc_per_seed']}")


if __name__ == "__main__":
    main()
