"""The benchmark suite: each benchmark in its own process, one summary table, one JSON file.

    python -m benchmarks.run --data ../shared/data     # full suite, 5-10 minutes on 2 CPU cores
    python -m benchmarks.run --quick                    # smoke test: tiny settings, numbers mean nothing
    python -m benchmarks.run --only input_pipeline compute
    python -m benchmarks.run --markdown benchmarks/results/latest.json   # the README table of a result

Each benchmark compares two things in one run, taking turns so that both see the same load:
  training_loop   our LightningModule + Trainer against the plain PyTorch loop (benchmarks/cifar_loop.py)
  input_pipeline  our JPEG decoding + augmentation against torchvision's default (benchmarks/input_pipeline.py)
  compute         each task's net: training GFLOP/s against the matmul peak, NCHW and channels_last (benchmarks/compute.py)
  feature_cache   frozen-backbone epochs with and without the feature cache (benchmarks/feature_cache.py)
  cli_startup     seconds to print the top-level --help against fit --help (benchmarks/cli_startup.py)
  deploy_speed    predicting with the exported ONNX and TorchScript files against eager (benchmarks/deploy_speed.py)
and each runs in a child process, whose peak resident set size is read from the kernel (``os.wait4``'s
``ru_maxrss``: the largest single process of that benchmark, DataLoader workers included).
Without the data folder, every benchmark generates synthetic images and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEFAULT_DATA, REPO, RESULTS, benchmark_parser, format_table, machine, publish

# module, full-suite arguments, --quick arguments; settings short enough for the whole suite to fit
# in about ten minutes on two busy cores (5.5 minutes measured on two quiet ones).
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "training_loop": (
        "benchmarks.cifar_loop",
        ["--epochs", "2"],
        ["--epochs", "1", "--limit", "2", "--num-workers", "0"],
    ),
    "input_pipeline": (
        "benchmarks.input_pipeline",
        [],
        ["--images", "32", "--repeats", "1", "--workers", "0", "--check-images", "4", "--accuracy-epochs", "1"],
    ),
    "compute": ("benchmarks.compute", [], ["--quick", "--nets", "simple_cnn"]),
    "feature_cache": (
        "benchmarks.feature_cache",
        ["--epochs", "2", "--image-size", "64"],
        ["--epochs", "1", "--image-size", "32", "--num-workers", "0"],
    ),
    "cli_startup": ("benchmarks.cli_startup", [], ["--repeats", "1"]),
    "deploy_speed": ("benchmarks.deploy_speed", [], ["--nets", "simple_cnn", "--repeats", "1"]),
}
USES_DATA = {"training_loop", "input_pipeline", "feature_cache"}
GOALS = {"training_loop": 0.97, "input_pipeline": 2.0, "deploy_speed": 1.5}


def run_child(module: str, args: list[str]) -> tuple[int, float, float]:
    """Run ``python -m module args`` from the repository root: exit status, wall seconds and peak
    RSS (MiB) of its largest process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux: KiB


def summary_rows(results: dict) -> list[dict]:
    """One row per comparison: what, the baseline's and our number, ours/baseline."""
    rows = []

    def add(benchmark: str, measure: str, baseline_name: str, baseline, ours_name: str, ours, ratio, goal=None):
        entry = results[benchmark]
        rows.append(
            {
                "benchmark": benchmark,
                "measure": measure,
                "baseline": baseline_name,
                "baseline_value": baseline,
                "ours": ours_name,
                "ours_value": ours,
                "ratio": ratio,
                "goal": goal,
                "met": None if goal is None else ratio >= goal,
                "peak_rss_mib": entry["peak_rss_mib"],
                "wall_seconds": entry["wall_seconds"],
            }
        )

    if "training_loop" in results and "report" in results["training_loop"]:
        r = results["training_loop"]["report"]
        paired = r.get("ratio_paired_batches_median")
        batches = len(r["ours"]["batch_seconds"])
        add(
            "training_loop",
            f"train img/s, AlexNet32 on CIFAR-10, {r['epochs']} epoch(s), {batches} batches of 128, data loading "
            f"included" + (f" (median of paired batch ratios: {paired})" if paired is not None else ""),
            "plain loop",
            r["plain"]["images_per_second"],
            "ours",
            r["ours"]["images_per_second"],
            r["ratio_images_per_second"],
            GOALS["training_loop"],
        )
    if "input_pipeline" in results and "report" in results["input_pipeline"]:
        r = results["input_pipeline"]["report"]
        for key in (k for k in r if k.startswith("workers_")):
            workers = int(key.split("_")[1])
            where = "1 process, 1 thread" if workers == 0 else f"{workers} DataLoader workers"
            for ours, ratio, normalised in (
                ("ours", "ratio", "uint8 batches normalised on the GPU"),
                ("ours_cpu", "ratio_cpu", "batches normalised on the CPU"),
            ):
                add(
                    "input_pipeline",
                    f"JPEG -> 224 px train img/s, {where}, {normalised}",
                    "torchvision default",
                    r[key]["default"]["images_per_second"],
                    "ours",
                    r[key][ours]["images_per_second"],
                    r[key][ratio],
                    GOALS["input_pipeline"],
                )
    if "compute" in results and "report" in results["compute"]:
        for net in results["compute"]["report"]["nets"]:
            nchw, cl = net["nchw"], net["channels_last"]
            add(
                "compute",
                f"{net['net']}, batch {net['batch']}: training GFLOP/s (share of the "
                f"{net['matmul_peak_gflops']} GFLOP/s matmul peak)",
                "NCHW",
                f"{nchw['gflops']} ({nchw['share_of_peak']:.0%})",
                "channels_last",
                f"{cl['gflops']} ({cl['share_of_peak']:.0%})",
                net["channels_last_ratio"],
            )
    if "feature_cache" in results and "report" in results["feature_cache"]:
        r = results["feature_cache"]["report"]
        add(
            "feature_cache",
            f"ResNet50 frozen backbone, {r['image_size']} px: median epoch s after the first",
            "no cache",
            r["plain"]["median_epoch_seconds_after_first"],
            "cache",
            r["cached"]["median_epoch_seconds_after_first"],
            r["ratio_median_epoch_after_first"],
        )
    if "cli_startup" in results and "report" in results["cli_startup"]:
        r = results["cli_startup"]["report"]["median_seconds"]
        add(
            "cli_startup",
            "seconds until --help has printed (median of fresh processes)",
            "fit --help",
            r["lit-transfer fit --help"],
            "--help",
            r["lit-transfer --help"],
            round(r["lit-transfer fit --help"] / r["lit-transfer --help"], 1),
        )
    if "deploy_speed" in results and "report" in results["deploy_speed"]:
        for net in results["deploy_speed"]["report"]["results"]:
            add(
                "deploy_speed",
                f"{net['net']}, batch {net['batch']}: predict img/s (share of the {net['matmul_peak_gflops']} GFLOP/s matmul peak)",
                "eager",
                f"{net['eager']['images_per_second']} ({net['eager']['share_of_peak']:.0%})",
                "onnxruntime",
                f"{net['onnx']['images_per_second']} ({net['onnx']['share_of_peak']:.0%})",
                net["onnx"]["ratio_to_eager"],
                GOALS["deploy_speed"],
            )
    return rows


def print_summary(report: dict) -> None:
    m = report["machine"]
    print(
        f"\nBenchmark suite ({'quick' if report['quick'] else 'full'}), {report['wall_seconds']:.0f} s on "
        f"{m['cpu']}, {m['usable_cores']} cores, {m['torch_threads']} torch threads"
    )
    columns = ["benchmark", "measure", "baseline", "ours", "ours/baseline", "goal", "peak RSS MiB"]
    rows = [
        (
            r["benchmark"],
            r["measure"],
            f"{r['baseline']}: {r['baseline_value']}",
            f"{r['ours']}: {r['ours_value']}",
            r["ratio"],
            "" if r["goal"] is None else f">= {r['goal']} {'met' if r['met'] else 'NOT met'}",
            r["peak_rss_mib"],
        )
        for r in report["summary"]
    ]
    print(format_table(columns, rows))
    for name, entry in report["benchmarks"].items():
        if entry["status"] != 0:
            print(f"{name}: FAILED (exit status {entry['status']})")
        elif "report" in entry:
            print(f"{name}: data {entry['report'].get('data', 'random tensors (compute only)')}")


def markdown(report: dict) -> str:
    """The summary as Markdown tables, for the README: the comparisons, then the compute details."""
    lines = [
        "| benchmark | measure | baseline | ours | ours/baseline | goal | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for r in report["summary"]:
        goal = "" if r["goal"] is None else f"≥ {r['goal']} ({'met' if r['met'] else 'not met'})"
        lines.append(
            f"| {r['benchmark']} | {r['measure']} | {r['baseline']}: {r['baseline_value']} | "
            f"{r['ours']}: {r['ours_value']} | {r['ratio']} | {goal} | {r['peak_rss_mib']:.0f} |"
        )
    compute = report["benchmarks"].get("compute", {}).get("report")
    if compute:
        lines += [
            "",
            "| net (training step) | batch | GFLOP/image | img/s NCHW | GFLOP/s NCHW | img/s channels_last | "
            "GFLOP/s channels_last | channels_last/NCHW | fp32 matmul GFLOP/s, MKL / oneDNN |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n in compute["nets"]:
            nchw, cl = n["nchw"], n["channels_last"]
            lines.append(
                f"| {n['net']} | {n['batch']} | {n['gflop_per_image']} | {nchw['images_per_second']} | "
                f"{nchw['gflops']} ({nchw['share_of_peak']:.0%}) | {cl['images_per_second']} | "
                f"{cl['gflops']} ({cl['share_of_peak']:.0%}) | {n['channels_last_ratio']} | "
                f"{n['matmul_gflops']['matmul_mkl']} / {n['matmul_gflops']['matmul_onednn']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.run", __doc__)
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="the shared data folder (synthetic images when absent)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks that everything runs")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument(
        "--out",
        default=None,
        help="JSON to write (default: benchmarks/results/latest.json, or latest_quick.json with --quick)",
    )
    parser.add_argument("--markdown", metavar="JSON", help="print the summary of a written result as Markdown and stop")
    args = parser.parse_args(argv)
    if args.markdown:
        report = json.loads(Path(args.markdown).read_text())
        print(markdown(report))
        return report

    out = Path(args.out or RESULTS / ("latest_quick.json" if args.quick else "latest.json"))
    data = Path(args.data).expanduser().resolve()
    if not data.is_dir():
        print(f"data: no folder {data}: every benchmark uses synthetic images (timing only)", flush=True)
    start = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as tmp:
        for name in args.only:
            module, full, quick = BENCHMARKS[name]
            child_out = Path(tmp) / f"{name}.json"
            child_args = (quick if args.quick else full) + ["--out", str(child_out)]
            if name in USES_DATA:
                child_args = ["--data", str(data), *child_args]
            print(f"\n=== {name}: python -m {module} {' '.join(child_args)}", flush=True)
            status, wall, rss = run_child(module, child_args)
            results[name] = {"status": status, "wall_seconds": round(wall, 1), "peak_rss_mib": round(rss, 1)}
            if status == 0 and child_out.is_file():
                results[name]["report"] = json.loads(child_out.read_text())

    report = {
        "suite": "benchmarks.run",
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "peak_rss_note": "ru_maxrss of the benchmark's child process tree: its largest single process",
        "summary": [],
        "benchmarks": results,
    }
    report["summary"] = summary_rows(results)
    publish(report, out, print_summary)
    failed = [name for name, entry in results.items() if entry["status"] != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
    return report


if __name__ == "__main__":
    main()
