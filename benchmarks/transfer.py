"""Transfer learning on real pretrained features: validation accuracy per epoch and time to a target,
for each fine-tuning recipe, with EfficientNet-Lite0's ImageNet weights (benchmarks/efficientnet_lite.py).

Each run is the task's config through the command line (``python -m lit_transfer fit``, one process
per run, one after the other, the same seed), with the packaged backbone, its weights file and its
normalisation; the recipes differ only in what trains:

  frozen_cached  the backbone frozen, the head trained on cached features (augment none)
  full           every layer trains, one learning rate
  groups         every layer trains; early blocks at 1/100 and late blocks at 1/10 of the head's lr
  gradual        head only at first; the last blocks join at epoch 1, the middle ones at epoch 2

Read from each run's TensorBoard events: val/acc after every epoch and the wall time at which it was
logged (from the process start: start-up, weight loading and the feature cache included). Reported:
the best val/acc, the time to reach ``--target`` (None when never), and the wall time of the run.

    python -m benchmarks.transfer --data ../shared/data                     # ants vs bees, every recipe
    python -m benchmarks.transfer --data ../shared/data --tasks catsdogs --recipes frozen_cached full

Data: ``<data>/hymenoptera_data`` (train 245 / val 153) and ``<data>/dogs_vs_cats_kaggle_subset/train``
(2002 photos, split 1602/400). A task whose folder is missing is skipped, said in the output.
"""

from __future__ import annotations

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


def recipe_args(recipe: str, lr: float) -> list[str]:
    """The flags of a recipe; ``lr`` is the head's learning rate."""
    if recipe == "frozen_cached":
        return ["--model.finetune", "feature_extractor", "--data.augment", "none", "--model.feature_cache", "true"]
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


def run_recipe(task: str, data_root: Path, recipe: str, lr: float, epochs: int, root: Path) -> dict:
    config, _ = TASKS[task]
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / config),
        "--data.root",
        str(data_root),
        "--data.num_workers",
        "2",
        "--run_name",
        f"{task}-{recipe}",
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
    ]
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "lit_transfer", *args], cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        return {"task": task, "recipe": recipe, "lr": lr, "error": done.stderr.strip().splitlines()[-1:]}
    (run,) = (root / "lightning_logs" / f"{task}-{recipe}").glob("version_*")
    events = EventAccumulator(str(run))
    events.Reload()
    accuracy = events.Scalars("val/acc")
    return {
        "task": task,
        "recipe": recipe,
        "lr": lr,
        "epochs": epochs,
        "val_acc": [round(e.value, 4) for e in accuracy],
        "seconds_at_epoch": [round(e.wall_time - start, 1) for e in accuracy],
        "best_val_acc": round(max(e.value for e in accuracy), 4),
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
            r["lr"],
            r.get("best_val_acc", "error"),
            time_to(r, target),
            r.get("wall_seconds"),
        )
        for r in report["runs"]
    ]
    print(format_table(["task", "recipe", "lr", "best val/acc", f"s to {target}", "wall s"], rows))


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.transfer", __doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding the tasks' data sets")
    parser.add_argument("--tasks", nargs="+", default=["hymenoptera"], choices=list(TASKS))
    parser.add_argument("--recipes", nargs="+", default=["frozen_cached", "full", "groups", "gradual"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None, help="the head's lr (default: per recipe)")
    parser.add_argument("--target", type=float, default=0.95, help="val/acc whose time is reported")
    add_out_option(parser, "transfer.json")
    args = parser.parse_args(argv)
    default_lr = {"frozen_cached": 3e-3, "full": 1e-4, "groups": 1e-3, "gradual": 1e-3}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            data_root = Path(args.data) / TASKS[task][1]
            if not data_root.is_dir():
                print(f"skipped {task}: no data at {data_root}", flush=True)
                continue
            for recipe in args.recipes:
                result = run_recipe(task, data_root, recipe, args.lr or default_lr[recipe], args.epochs, Path(tmp))
                print(result, flush=True)
                runs.append(result)
    report = {"benchmark": "transfer", "target": args.target, "runs": runs, "machine": machine()}
    return publish(report, args.out, print_table)


if __name__ == "__main__":
    main()
