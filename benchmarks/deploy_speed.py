"""Prediction speed of an exported net: eager PyTorch against the ONNX file on onnxruntime and the
TorchScript file, side by side, with each one's share of this machine's matmul peak.

Each net is what ``python -m lit_transfer export`` writes (``lit_transfer.export.Deployable``: uint8
images in, normalisation inside, logits out, eval mode), built with random weights (the speed does not
depend on them) at its task's image size. The three runtimes and the two fp32 matmuls of
``benchmarks.compute`` take turns on the same fixed random batch (``benchmarks.common.interleave``), so
all see the same load; the kernels alone, no image decoding. Reported from the medians: images/second,
the ratio against eager, GFLOP/s (the forward's FLOPs, counted once by ``FlopCounterMode``) and its
share of the faster matmul. The exported files are checked against eager on the batch first.

    python -m benchmarks.deploy_speed
    python -m benchmarks.deploy_speed --nets resnet50 --repeats 10
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import add_out_option, benchmark_parser, format_table, interleave, machine, median, publish
from benchmarks.compute import CASES, MATMUL_SIZE, matmuls
from lit_transfer.data.presets import IMAGENET_MEAN, IMAGENET_STD
from lit_transfer.export import Deployable, compare, load_runner, write

RUNTIMES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def forward_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops()


def measure(name: str, repeats: int, folder: Path) -> dict:
    case = CASES[name]
    torch.manual_seed(0)
    model = Deployable(case.build(), IMAGENET_MEAN, IMAGENET_STD)
    images = torch.randint(0, 256, (case.batch, 3, case.image_size, case.image_size), dtype=torch.uint8)
    runners = {"eager": lambda x: model(x)}
    sizes = {}
    for fmt, ending in RUNTIMES.items():
        path = folder / f"{name}{ending}"
        write(model, images, fmt, path, {"benchmark": name})
        runners[fmt] = load_runner(fmt, path)
        parity = compare(model, runners[fmt], [images])
        if not parity.holds:
            raise RuntimeError(f"{name} {fmt}: {parity.describe()}")
        sizes[fmt] = round(path.stat().st_size / 2**20, 1)
    kernels = matmuls(MATMUL_SIZE)
    with torch.no_grad():
        seconds = interleave(
            {
                **{k: (lambda run=run: run(images)) for k, run in runners.items()},
                **{k: c for k, (c, _) in kernels.items()},
            },
            repeats=repeats,
            warmup=1,
        )
    peak = max(n / median(seconds[k]) / 1e9 for k, (_, n) in kernels.items())
    flops = forward_flops(model, images)
    eager = case.batch / median(seconds["eager"])
    result = {"net": case.label, "batch": case.batch, "file_mib": sizes, "matmul_peak_gflops": round(peak, 1)}
    for runtime in runners:
        per_second = case.batch / median(seconds[runtime])
        result[runtime] = {
            "images_per_second": round(per_second, 1),
            "ratio_to_eager": round(per_second / eager, 2),
            "share_of_peak": round(flops / median(seconds[runtime]) / 1e9 / peak, 2),
            "seconds": [round(s, 4) for s in seconds[runtime]],
        }
    return result


def print_table(report: dict) -> None:
    rows = [
        (
            r["net"],
            runtime,
            r[runtime]["images_per_second"],
            r[runtime]["ratio_to_eager"],
            f"{r[runtime]['share_of_peak']:.0%}",
        )
        for r in report["results"]
        for runtime in ("eager", *RUNTIMES)
    ]
    print(format_table(["net", "runtime", "img/s", "x eager", "share of peak"], rows))


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.deploy_speed", __doc__)
    parser.add_argument("--nets", nargs="+", default=["simple_cnn", "alexnet", "resnet50"], choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=6, help="timed rounds of each runtime")
    add_out_option(parser, "deploy_speed.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, args.repeats, Path(tmp)) for name in args.nets]
    report = {"benchmark": "deploy_speed", "results": results, "machine": machine()}
    return publish(report, args.out, print_table)


if __name__ == "__main__":
    main()
