"""Transfer learning on real pretrained features: validation accuracy per epoch and time to a target,
for each fine-tuning recipe, with EfficientNet-Lite0's ImageNet weights (benchmarks/efficientnet_lite.py).

Each run is the task's config through the command line (``python -m lit_transfer fit``, one process
per run, one after the other, the same seed), with the packaged backbone, its weights file and its
normalisation; the recipes differ only in what trains:

  frozen_cached  the backbone frozen, the head trained on cached features (augment none)
  frozen         the backbone frozen, the head trained on the augmented images (every epoch through the backbone)
  full           every layer trains, one learning rate
  groups         every layer trains; early blocks at 1/100 and late blocks at 1/10 of the head's lr
  gradual        head only at first; the last blocks join at epoch 1, the middle ones at epoch 2

Read from each run's TensorBoard events: val/acc and val/acc_macro after every epoch and the wall time
at which it was logged (from the process start: start-up, weight loading and the feature cache
included). Reported: the best val/acc (and the val/acc_macro of that epoch), the time to reach
``--target`` (None when never), the seconds per epoch (after the first), and the wall time of the run.

``--options`` runs each recipe once per training option (``OPTIONS``: early stopping, EMA, class
weights, balanced sampling, RandAugment, MixUp, CutMix, test-time flips; ``none`` is the recipe as it
is). ``--imbalance bees=0.1`` trains on a copy of the training split that keeps only that share of
the class's images (the first ones by name; validation stays whole), for the class-imbalance options.
``--image_sizes`` and ``--lrs`` run every combination; ``--lr_find`` adds a run at the rate
``python -m lit_transfer lr_find`` suggests for the recipe (searched from the first of ``--lrs``).

    python -m benchmarks.transfer --data ../shared/data                     # ants vs bees, every recipe
    python -m benchmarks.transfer --data ../shared/data --tasks catsdogs --recipes frozen_cached full
    python -m benchmarks.transfer --data ../shared/data --recipes frozen_cached --image_sizes 224 256 \
        --lrs 0.003 0.01 0.03 --lr_find --epochs 6 --out benchmarks/results/transfer_frozen_hymenoptera.json
    python -m benchmarks.transfer --data ../shared/data --recipes frozen --lrs 0.01 --epochs 6 \
        --options none early_stopping ema randaugment mixup cutmix tta --out benchmarks/results/options_hymenoptera.json
    python -m benchmarks.transfer --data ../shared/data --recipes frozen --lrs 0.01 --epochs 6 --imbalance bees=0.1 \
        --options none class_weights balanced_sampling --out benchmarks/results/options_imbalanced.json

Data: ``<data>/hymenoptera_data`` (train 245 / val 153) and ``<data>/dogs_vs_cats_kaggle_subset/train``
(2002 photos, split 1602/400). A task whose folder is missing is skipped, said in the output.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.common import (
    DEFAULT_DATA,
    REPO,
    add_out_option,
    benchmark_parser,
    format_table,
    machine,
    publish,
)
from benchmarks.efficientnet_lite import cli_args

TASKS = {
    "hymenoptera": ("hymenoptera_alexnet.yaml", "hymenoptera_data"),
    "catsdogs": ("catsdogs_resnet50.yaml", "dogs_vs_cats_kaggle_subset/train"),
}
LATE, MIDDLE = (
    ["_blocks.13", "_blocks.14", "_blocks.15", "_conv_head", "_bn1"],
    ["_blocks.9", "_blocks.10", "_blocks.11", "_blocks.12"],
)
EARLY = ["_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(9))]
OPTIONS = {
    "none": [],
    "early_stopping": ["--early_stopping.monitor", "val/acc", "--early_stopping.patience", "2"],
    "ema": ["--ema.decay", "0.9"],
    "class_weights": ["--model.class_weights", "auto"],
    "balanced_sampling": ["--data.balanced_sampling", "true"],
    "randaugment": ["--data.augmentations", "[{class_path: torchvision.transforms.v2.RandAugment}]"],
    "mixup": ["--model.mixup_alpha", "0.2"],
    "cutmix": ["--model.cutmix_alpha", "1.0"],
    "tta": ["--model.tta", "hflip"],
}


def recipe_args(recipe: str, lr: float) -> list[str]:
    """The flags of a recipe; ``lr`` is the head's learning rate."""
    if recipe == "frozen_cached":
        return ["--model.finetune", "feature_extractor", "--data.augment", "none", "--model.feature_cache", "true"]
    if recipe == "frozen":
        return ["--model.finetune", "feature_extractor"]
    if recipe == "full":
        return ["--model.finetune", "full"]
    if recipe == "groups":
        groups = (
            f"[{{name: early, modules: [{', '.join(EARLY)}], lr: {lr / 100}}}, "
            f"{{name: late, modules: [{', '.join(MIDDLE + LATE)}], lr: {lr / 10}}}, {{name: head, modules: [head], lr: {lr}}}]"
        )
        return ["--model.finetune", "full", "--model.param_groups", groups]
    if recipe == "gradual":
        schedule = f"{{1: [{', '.join(LATE)}], 2: [{', '.join(MIDDLE)}]}}"
        return ["--model.finetune", "feature_extractor", "--model.unfreeze", schedule]
    raise ValueError(f"unknown recipe {recipe!r}")


def run_label(task: str, recipe: str, lr: float, image_size: int, option: str) -> str:
    return f"{task}-{recipe}-{image_size}-{lr:g}" + ("" if option == "none" else f"-{option}")


def recipe_command(
    task: str, data_root: Path, recipe: str, lr: float, epochs: int, image_size: int, root: Path, option: str = "none"
) -> list[str]:
    """``fit`` (or, with ``lr_find`` in front instead, the lr finder) for one recipe of one task, with one
    training option (``OPTIONS``)."""
    config, _ = TASKS[task]
    return [
        "--config",
        str(REPO / "configs" / config),
        "--data.root",
        str(data_root),
        "--data.num_workers",
        "2",
        "--data.image_size",
        str(image_size),
        "--run_name",
        run_label(task, recipe, lr, image_size, option),
        *cli_args(),
        "--model.param_groups",
        "null",
        "--model.optimizer.init_args.lr",
        str(lr),
        "--model.lr_scheduler",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "--model.lr_scheduler.T_max",
        str(epochs),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(root),
        *recipe_args(recipe, lr),
        *OPTIONS[option],
    ]


def suggested_lr(task: str, data_root: Path, recipe: str, lr: float, epochs: int, image_size: int, root: Path) -> float:
    """What ``python -m lit_transfer lr_find`` suggests for the recipe, starting from ``lr``."""
    args = ["lr_find", *recipe_command(task, data_root, recipe, lr, epochs, image_size, root)]
    done = subprocess.run([sys.executable, "-m", "lit_transfer", *args], cwd=REPO, capture_output=True, text=True)
    found = re.search(r"suggested lr ([0-9.e-]+)", done.stdout + done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"lr_find failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(found[1])


def run_recipe(
    task: str, data_root: Path, recipe: str, lr: float, epochs: int, image_size: int, root: Path, option: str = "none"
) -> dict:
    args = ["fit", *recipe_command(task, data_root, recipe, lr, epochs, image_size, root, option)]
    key = {"task": task, "recipe": recipe, "option": option, "image_size": image_size, "lr": lr}
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "lit_transfer", *args], cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        return {**key, "error": done.stderr.strip().splitlines()[-1:]}
    (run,) = (root / "lightning_logs" / run_label(task, recipe, lr, image_size, option)).glob("version_*")
    events = EventAccumulator(str(run))
    events.Reload()
    accuracy, macro = events.Scalars("val/acc"), events.Scalars("val/acc_macro")
    best = max(range(len(accuracy)), key=lambda i: accuracy[i].value)
    at = [e.wall_time - start for e in accuracy]
    return {
        **key,
        "epochs": epochs,
        "epochs_run": len(accuracy),
        "val_acc": [round(e.value, 4) for e in accuracy],
        "val_acc_macro": [round(e.value, 4) for e in macro],
        "seconds_at_epoch": [round(t, 1) for t in at],
        "best_val_acc": round(accuracy[best].value, 4),
        "macro_at_best": round(macro[best].value, 4),
        "seconds_per_epoch": round((at[-1] - at[0]) / (len(at) - 1), 1) if len(at) > 1 else None,
        "wall_seconds": round(wall, 1),
    }


def time_to(result: dict, target: float) -> float | None:
    """Seconds from the start until val/acc first reached ``target``."""
    hits = [s for acc, s in zip(result.get("val_acc", []), result.get("seconds_at_epoch", [])) if acc >= target]
    return hits[0] if hits else None


def print_table(report: dict) -> None:
    target = report["target"]
    rows = [
        (
            r["task"],
            r["recipe"],
            r.get("option", "none"),
            r.get("image_size"),
            f"{r['lr']:.3g}" + (" (lr_find)" if r.get("lr_from") == "lr_find" else ""),
            r.get("best_val_acc", "error"),
            r.get("macro_at_best"),
            time_to(r, target),
            r.get("seconds_per_epoch"),
            r.get("wall_seconds"),
        )
        for r in report["runs"]
    ]
    headers = ["task", "recipe", "option", "size", "lr", "best val/acc", "macro", f"s to {target}", "s/epoch", "wall s"]
    print(format_table(headers, rows))


def imbalanced_copy(data_root: Path, imbalance: str, into: Path) -> Path:
    """``data_root`` with ``train/<class>`` cut to a share of its images (``"bees=0.1"``), as links."""
    name, share = imbalance.split("=")
    for split in ("train", "val"):
        for folder in sorted((data_root / split).iterdir()):
            files = sorted(folder.iterdir())
            if split == "train" and folder.name == name:
                files = files[: max(1, round(len(files) * float(share)))]
            (into / split / folder.name).mkdir(parents=True)
            for f in files:
                (into / split / folder.name / f.name).symlink_to(f.resolve())
    return into


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.transfer", __doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding the tasks' data sets")
    parser.add_argument("--tasks", nargs="+", default=["hymenoptera"], choices=list(TASKS))
    parser.add_argument("--recipes", nargs="+", default=["frozen_cached", "full", "groups", "gradual"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--lrs", type=float, nargs="+", default=None, help="the head's lrs to try (default: per recipe)"
    )
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[224], help="data.image_size of the runs")
    parser.add_argument(
        "--lr_find", action="store_true", help="also run each recipe at what lr_find suggests (from the first lr)"
    )
    parser.add_argument("--target", type=float, default=0.95, help="val/acc whose time is reported")
    parser.add_argument("--options", nargs="+", default=["none"], choices=list(OPTIONS), help="training options to run")
    parser.add_argument("--imbalance", help="CLASS=SHARE: train on that share of the class's training images")
    add_out_option(parser, "transfer.json")
    args = parser.parse_args(argv)
    default_lr = {"frozen_cached": 3e-3, "frozen": 1e-2, "full": 1e-4, "groups": 1e-3, "gradual": 1e-3}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            data_root = Path(args.data) / TASKS[task][1]
            if not data_root.is_dir():
                print(f"skipped {task}: no data at {data_root}", flush=True)
                continue
            if args.imbalance:
                data_root = imbalanced_copy(data_root, args.imbalance, Path(tmp) / f"{task}-imbalanced")
            for recipe, size in itertools.product(args.recipes, args.image_sizes):
                lrs = args.lrs or [default_lr[recipe]]
                setting = (task, data_root, recipe)
                for lr, option in itertools.product(lrs, args.options):
                    runs.append(run_recipe(*setting, lr, args.epochs, size, Path(tmp), option))
                    print(runs[-1], flush=True)
                if args.lr_find:
                    found = suggested_lr(*setting, lrs[0], args.epochs, size, Path(tmp))
                    runs.append({**run_recipe(*setting, found, args.epochs, size, Path(tmp)), "lr_from": "lr_find"})
                    print(runs[-1], flush=True)
    report = {
        "benchmark": "transfer",
        "target": args.target,
        "imbalance": args.imbalance,
        "runs": runs,
        "machine": machine(),
    }
    return publish(report, args.out, print_table)


if __name__ == "__main__":
    main()
