"""GPU check: what a first run on an NVIDIA GPU must show, each point asserted, in about five minutes.

``benchmarks/gpu_check.sh OUT`` installs the project into ``OUT`` and runs this; everything either
writes goes under ``OUT``. ``--device cpu`` runs the same checks on the CPU at tiny sizes (a dry run
of the script itself, not of a GPU).

1. device: torch sees the GPU (its name, compute capability, bfloat16 support);
2. channels_last ``auto``: the rule's choice for 32-true, 16-mixed and bf16-mixed on this device
   (NHWC exactly for the two mixed precisions on CUDA), and a real fit's convolutions in that format;
3. training steps on batches already on the device (no data loading, no decoding): ResNet50 and
   AlexNet at 224 px, fp32 with TF32 off (a true fp32 baseline) against 16-mixed and bf16-mixed, each
   NCHW and NHWC; every loss finite; ms per step and each one's speed-up over fp32 NCHW;
4. the command line: the demo (generated shapes) fitted with 16-mixed and ``--trainer.deterministic
   true`` for 2 epochs, and again stopped after epoch 0 and resumed from ``last.ckpt``: val/acc finite,
   the resumed run's weights equal to the uninterrupted run's; then ``predict`` writes one row per image;
5. the GPU-sensitive tests (``tests/test_accelerators.py``, ``tests/test_deterministic_pooling.py``),
   none of their GPU tests skipped.

It exits with status 0 only when every check holds; ``OUT/gpu_check.json`` holds every number.

    benchmarks/gpu_check.sh /tmp/gpu_check                      # install into it, then check
    python -m benchmarks.gpu_check --out /tmp/gpu_check         # in an environment that has the project
    python -m benchmarks.gpu_check --out /tmp/dry --device cpu  # the dry run
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, benchmark_parser, format_table, machine, median, write_json

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
# (torchvision model, image side, batch) of the step timing, on the GPU and in the CPU dry run.
STEP_NETS = {"cuda": [("resnet50", 224, 64), ("alexnet", 224, 128)], "cpu": [("resnet18", 64, 4)]}
GPU_TESTS = ["tests/test_accelerators.py", "tests/test_deterministic_pooling.py"]


class Checks:
    """Each check's outcome and numbers, in order; a check that raises is a failed one, with its error."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def run(self, name: str, check: Callable[[], dict]) -> dict:
        print(f"--- {name}", flush=True)
        start = time.perf_counter()
        try:
            result = {"name": name, "ok": True, **check()}
        except Exception as error:  # noqa: BLE001 - a failed check is reported, and the others still run
            result = {"name": name, "ok": False, "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        result["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{'ok  ' if result['ok'] else 'FAIL'} {name}: {result.get('error', '')}", flush=True)
        self.results.append(result)
        return result


def require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- 1. device -------------------------------------------------------------------------------------
def device_check(device: torch.device) -> dict:
    if device.type == "cpu":
        return {"device": "cpu (dry run)", "bf16": True}
    require(torch.cuda.is_available(), "torch sees no CUDA GPU: install a CUDA build of torch, or pass --device cpu")
    return {
        "device": torch.cuda.get_device_name(device),
        "capability": list(torch.cuda.get_device_capability(device)),
        "bf16": torch.cuda.is_bf16_supported(),
        "cuda": torch.version.cuda,
    }


# -- 2. channels_last auto -------------------------------------------------------------------------
def auto_rule_check(device: torch.device) -> dict:
    from lit_transfer.callbacks.channels_last import channels_last_pays

    picks = {precision: channels_last_pays(device.type, precision) for precision in PRECISIONS}
    expected = {p: device.type == "cpu" or p != "32-true" for p in PRECISIONS}
    require(picks == expected, f"the auto rule picks {picks} on {device.type}; designed: {expected}")
    return {"nhwc": picks}


# -- 3. training steps on device-resident batches --------------------------------------------------
def step_ms(name: str, side: int, batch: int, precision: str, nhwc: bool, device: torch.device, steps: int) -> dict:
    """Median milliseconds of an SGD step (forward, loss, backward, update) on one fixed batch already on
    the device, after 3 warm-up steps; Lightning's recipe for each precision (autocast; float16 with a
    GradScaler), written out with torch so that nothing but the step is timed."""
    import torchvision

    torch.manual_seed(0)
    layout = torch.channels_last if nhwc else torch.contiguous_format
    net = torchvision.models.get_model(name, num_classes=10).to(device, memory_format=layout)
    x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    dtype = AUTOCAST.get(precision)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    times, losses = [], []
    for i in range(3 + steps):
        sync(device)
        start = time.perf_counter()
        losses.append(step())
        sync(device)
        if i >= 3:
            times.append(1000 * (time.perf_counter() - start))
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    require(finite, f"{name} {precision} {'NHWC' if nhwc else 'NCHW'}: a non-finite loss")
    return {"ms": round(median(times), 2), "last_loss": round(float(losses[-1]), 4)}


def steps_check(device: torch.device, precisions: list[str], steps: int) -> dict:
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    rows = []
    # fp32 means fp32: TF32 (on by default for cuDNN convolutions) would flatter the baseline.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for name, side, batch in STEP_NETS[device.type]:
            for precision in precisions:
                for nhwc in (False, True):
                    timing = step_ms(name, side, batch, precision, nhwc, device, steps)
                    rows.append(
                        {"net": name, "side": side, "batch": batch, "precision": precision, "nhwc": nhwc, **timing}
                    )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    for row in rows:
        base = next(r for r in rows if r["net"] == row["net"] and r["precision"] == "32-true" and not r["nhwc"])
        row["speedup_over_fp32_nchw"] = round(base["ms"] / row["ms"], 2)
    return {"rows": rows}


# -- 4. the command line: fit, resume, predict -----------------------------------------------------
def cli_check(device: torch.device, precision: str, out: Path) -> dict:
    from lit_transfer.callbacks.channels_last import channels_last_pays
    from lit_transfer.cli import main

    runs, shapes = out / "runs", out / "shapes"
    stop_after_first_epoch = json.dumps({"class_path": "tests.helpers.StopAfterEpoch", "init_args": {"epoch": 0}})
    accelerator = ["--trainer.accelerator", "gpu" if device.type == "cuda" else "cpu", "--trainer.devices", "1"]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    # The dry run on the CPU: a few batches an epoch.
    short = ["--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"] if device.type == "cpu" else []

    def fit(name: str, *extra: str):
        return main(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "demo.yaml"),
                "--data.root",
                str(shapes),
                *accelerator,
                "--trainer.precision",
                precision,
                "--trainer.deterministic",
                "true",
                "--trainer.max_epochs",
                "2",
                "--trainer.default_root_dir",
                str(runs / name),
                *quiet,
                *short,
                *extra,
            ]
        )

    straight = fit("straight")
    model = straight.model
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    picked_nhwc = conv.weight.is_contiguous(memory_format=torch.channels_last)

    require(
        picked_nhwc == channels_last_pays(device.type, precision),
        f"the fit's convolutions are {'NHWC' if picked_nhwc else 'NCHW'}; auto picks the other for {precision}",
    )
    val_acc = float(straight.trainer.callback_metrics["val/acc"])
    require(math.isfinite(val_acc), f"val/acc is {val_acc}")

    fit("resumed", "--trainer.callbacks+", stop_after_first_epoch)
    fit("resumed", "--ckpt_path", "last")
    weights = [torch.load(newest(runs / name, "last.ckpt"), weights_only=True) for name in ("straight", "resumed")]
    require(all(w["epoch"] == 1 for w in weights), "a run did not end after epoch 1")
    differing = [k for k, v in weights[0]["state_dict"].items() if not torch.equal(v, weights[1]["state_dict"][k])]
    require(not differing, f"the resumed run's weights differ from the uninterrupted run's: {differing[:3]}")

    best, images = newest(runs / "straight", "best-*.ckpt"), sorted((shapes / "val" / "circle").glob("*.png"))
    predict_root, predict_dir = str(shapes / "val" / "circle"), str(runs / "predict")
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # its table of the first rows: kept, not shown
        main(
            [
                "predict",
                "--ckpt_path",
                str(best),
                "--data.predict_root",
                predict_root,
                *accelerator,
                *quiet,
                "--trainer.default_root_dir",
                predict_dir,
            ]
        )
    (out / "predict.log").write_text(printed.getvalue())
    (csv_file,) = (runs / "predict").rglob("predictions*.csv")
    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    require(len(rows) == len(images), f"predict wrote {len(rows)} rows for {len(images)} images")
    circles = sum(row["class_name"] == "circle" for row in rows) / len(rows)
    return {"precision": precision, "val_acc": round(val_acc, 4), "nhwc": picked_nhwc, "predicted_circle": circles}


# -- 5. the GPU-sensitive tests --------------------------------------------------------------------
def tests_check(device: torch.device, out: Path) -> dict:
    report = out / "tests.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            *GPU_TESTS,
            f"--basetemp={out / 'pytest'}",
            f"--junitxml={report}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    (out / "tests.log").write_text(result.stdout + result.stderr)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    require(result.returncode == 0, f"pytest failed: {summary} (see {out / 'tests.log'})")
    skipped_gpu = [line for line in result.stdout.splitlines() if "needs an NVIDIA GPU" in line]
    if device.type == "cuda":
        require(not skipped_gpu, f"GPU tests were skipped on the GPU: {skipped_gpu}")
    return {"summary": summary, "gpu_tests_skipped": len(skipped_gpu)}


def newest(root: Path, pattern: str) -> Path:
    """The newest checkpoint named ``pattern`` of the runs under ``root``."""
    return max(root.glob(f"lightning_logs/*/version_*/checkpoints/{pattern}"), key=lambda p: p.stat().st_mtime)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_steps(rows: list[dict]) -> None:
    cells = [
        (r["net"], r["precision"], "NHWC" if r["nhwc"] else "NCHW", r["ms"], f"{r['speedup_over_fp32_nchw']:.2f}x")
        for r in rows
    ]
    print(format_table(["net", "precision", "layout", "ms/step", "vs fp32 NCHW"], cells))


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.gpu_check", __doc__)
    parser.add_argument("--out", required=True, help="the folder everything is written to")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a dry run at tiny sizes")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    parser.add_argument("--skip-tests", action="store_true", help="leave out check 5 (the test files)")
    args = parser.parse_args(argv)
    # cuBLAS's deterministic workspace, set before the first CUDA call (Lightning sets it only when the
    # deterministic fit starts, after the step timings have made cuBLAS's handles).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)

    checks = Checks()
    found = checks.run("device", lambda: device_check(device))
    if found["ok"]:
        precisions = ["32-true", "bf16-mixed"] if device.type == "cpu" else ["32-true", "16-mixed"]
        if device.type == "cuda" and found["bf16"]:
            precisions.append("bf16-mixed")
        checks.run("channels_last auto rule", lambda: auto_rule_check(device))
        steps = checks.run("training steps", lambda: steps_check(device, precisions, args.steps))
        if steps["ok"]:
            print_steps(steps["rows"])
        checks.run("fit, resume, predict", lambda: cli_check(device, precisions[1], out))
        if not args.skip_tests:
            checks.run("GPU-sensitive tests", lambda: tests_check(device, out))
    failed = [c["name"] for c in checks.results if not c["ok"]]
    report = {"ok": not failed, "checks": checks.results, "machine": machine(), "settings": vars(args)}
    print(f"wrote {write_json(out / 'gpu_check.json', report)}")
    print("every check holds" if not failed else f"FAILED: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
