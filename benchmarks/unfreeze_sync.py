"""What the gradient sync of layers thawed mid-fit costs under DDP (issue 19, item 1).

DDP averages, overlapped with the backward pass, the gradients of the parameters that trained when
it wrapped the net; layers that gradual unfreezing thaws later are averaged by ``GradualUnfreezing``
in one all-reduce after the backward pass. Two runs of the cats/dogs task (ResNet18, 2 CPU processes,
gloo) train the same layers in their second epoch, layer4 and the head:

* ``unfreeze``: ``finetune: feature_extractor`` and ``unfreeze: {1: [layer4]}``: layer4 thawed after
  the wrap, synced by the extra all-reduce;
* ``frozen_from_start``: ``finetune: full`` and ``freeze`` of everything before layer4: layer4 trains
  from the start, synced by DDP itself.

Each run's processes time their second training epoch (validation off); the runs take turns,
``--repeats`` times each. Printed and written to ``benchmarks/results/unfreeze_sync.json``: the
seconds of each, and the median ratio ``unfreeze / frozen_from_start``.

    python -m benchmarks.unfreeze_sync
    python -m benchmarks.unfreeze_sync --image-size 160 --batches 30 --repeats 3

Generated images (timing only) and random weights: neither changes the time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common
from benchmarks.feature_cache import EpochTimer

CONFIG = common.REPO / "configs" / "catsdogs_resnet50.yaml"
RECIPES = {
    "unfreeze": ["--model.finetune", "feature_extractor", "--model.unfreeze", "{1: [layer4]}"],
    "frozen_from_start": ["--model.finetune", "full", "--model.freeze", "[conv1, bn1, layer1, layer2, layer3]"],
}


class EpochSeconds(EpochTimer):
    """The feature-cache benchmark's epoch timer, written out by each process (they are other processes
    than this script's): ``<folder>/rank<k>.json``, the seconds of each training epoch."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.epoch_seconds))


def second_epoch_seconds(recipe: str, data: Path, work: Path, args) -> float:
    """The slower process's second-epoch seconds of one 2-process run of ``recipe``."""
    times = work / "times"
    callback = {"class_path": "benchmarks.unfreeze_sync.EpochSeconds", "init_args": {"folder": str(times)}}
    command = [
        *("fit", "--config", str(CONFIG), "--model.weights", "null", "--model.net.init_args.name", "resnet18"),
        *("--model.param_groups", "null", *RECIPES[recipe]),
        *(
            "--data.root",
            str(data),
            "--data.image_size",
            str(args.image_size),
            "--data.resize_size",
            str(args.image_size),
        ),
        *("--data.batch_size", str(args.batch_size), "--data.num_workers", "0"),
        *("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"),
        *("--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(args.batches)),
        *("--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"),
        *("--checkpoint.save_top_k", "0", "--checkpoint.save_last", "false"),
        *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
        *("--trainer.default_root_dir", str(work), "--trainer.callbacks+", json.dumps(callback)),
    ]
    # One thread per process: the two processes share the cores instead of fighting over them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "lit_transfer", *command], cwd=common.REPO, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return max(json.loads((times / f"rank{rank}.json").read_text())[1] for rank in range(2))


def main(argv: list[str] | None = None) -> dict:
    parser = common.benchmark_parser("benchmarks.unfreeze_sync", __doc__)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch and process")
    parser.add_argument("--repeats", type=int, default=2)
    common.add_out_option(parser, "unfreeze_sync.json")
    args = parser.parse_args(argv)

    from lit_transfer.data.shapes import generate_shapes

    seconds: dict[str, list[float]] = {name: [] for name in RECIPES}
    with tempfile.TemporaryDirectory(prefix="unfreeze_sync-") as tmp:
        per_class = args.batches * args.batch_size  # 3 classes: enough for both processes' batches
        data = generate_shapes(Path(tmp) / "shapes", per_class, 4, args.image_size, seed=0)
        for round_ in range(args.repeats):
            for name in RECIPES:
                seconds[name].append(second_epoch_seconds(name, data, Path(tmp) / f"{name}-{round_}", args))
                print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    ratio = common.median(seconds["unfreeze"]) / common.median(seconds["frozen_from_start"])
    report = {
        "seconds_second_epoch": {k: [round(v, 3) for v in vs] for k, vs in seconds.items()},
        "ratio_unfreeze_over_frozen_from_start": round(ratio, 3),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": common.machine(),
    }

    def table(_: dict) -> None:
        rows = [(name, " ".join(f"{v:.2f}" for v in vs), f"{common.median(vs):.2f}") for name, vs in seconds.items()]
        print(common.format_table(["run", "second epoch, s", "median"], rows))
        print(f"unfreeze / frozen_from_start: {ratio:.3f}")

    return common.publish(report, args.out, table)


if __name__ == "__main__":
    main()
