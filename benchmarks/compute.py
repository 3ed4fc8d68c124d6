"""Compute efficiency: each task's net in a training step, GFLOP/s against this machine's matmul peak,
in the default (NCHW) memory format and in ``channels_last``.

One training step is forward, cross-entropy, backward and an SGD (momentum) step on a fixed random
batch: the kernels alone, no data loading. Its FLOPs are counted once by
``torch.utils.flop_counter.FlopCounterMode`` (forward + backward; the optimizer's element-wise update
is not counted). Four things take turns, round by round: a step of the NCHW net, a step of the
``channels_last`` copy (same initial weights; weights and input converted, as the ``ChannelsLast``
callback does), and two fp32 matmuls: ``torch.mm`` (MKL) and the same kind of product through
oneDNN, the library the convolutions run on (a 1x1 convolution is a matmul). On AMD CPUs MKL takes
its AVX2 code while oneDNN uses AVX-512, so the two peaks can differ twofold; the steps are compared
with the higher. Taking turns, all see the same load from other processes. Reported from the
medians: images/second, GFLOP/s, the share of the matmul peak, and the channels_last/NCHW ratio.

    python -m benchmarks.compute
    python -m benchmarks.compute --steps 10 --nets alexnet32 resnet50
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import add_out_option, benchmark_parser, format_table, interleave, machine, median, publish
from lit_transfer.nets import AlexNet, AlexNet32, SimpleCNN, TorchvisionNet

MATMUL_SIZE = 2048  # torch.mm of two 2048x2048 matrices; oneDNN: 2048 channels, 16x16 pixels, batch 16


@dataclass
class NetCase:
    label: str
    build: Callable[[], nn.Module]
    image_size: int
    batch: int
    steps: int  # timed steps of each memory format (after one untimed)


# The tasks' nets at their configs' image sizes; the 224 px ones with small batches and few steps.
CASES = {
    "simple_cnn": NetCase("SimpleCNN, demo, 32 px", lambda: SimpleCNN(3, width=32), 32, 64, 10),
    "alexnet32": NetCase("AlexNet32, CIFAR-10, 32 px", lambda: AlexNet32(10), 32, 128, 6),
    "alexnet": NetCase("AlexNet, hymenoptera, 224 px", lambda: AlexNet(2), 224, 16, 6),
    "resnet50": NetCase("ResNet50, cats vs dogs, 224 px", lambda: TorchvisionNet(2, "resnet50"), 224, 8, 3),
}


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(net(images), labels).backward()
    optimizer.step()


def step_flops(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    """FLOPs of one forward + backward, counted on a copy so the measured nets stay untouched."""
    net = copy.deepcopy(net)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(images), labels).backward()
    return counter.get_total_flops()


def matmuls(size: int) -> dict[str, tuple[Callable[[], object], int]]:
    """The two fp32 matmuls whose speed is the peak: each a call and its FLOPs."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    # A (batch * 16 * 16, size) x (size, size) product, run by oneDNN as a 1x1 convolution.
    pixels = torch.randn(16, size, 16, 16).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    return {
        "matmul_mkl": (lambda: torch.mm(a, b), 2 * size**3),
        "matmul_onednn": (lambda: F.conv2d(pixels, weight), 2 * 16 * 16 * 16 * size * size),
    }


def measure(case: NetCase, steps: int | None, matmul_size: int = MATMUL_SIZE) -> dict:
    torch.manual_seed(0)
    nchw = case.build().train()
    channels_last = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    images = torch.randn(case.batch, 3, case.image_size, case.image_size)
    labels = torch.randint(0, 2, (case.batch,))
    images_cl = images.contiguous(memory_format=torch.channels_last)
    flops = step_flops(nchw, images, labels)
    optimizers = {
        name: torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        for name, net in (("nchw", nchw), ("channels_last", channels_last))
    }
    kernels = matmuls(matmul_size)
    seconds = interleave(
        {
            "nchw": lambda: train_step(nchw, optimizers["nchw"], images, labels),
            "channels_last": lambda: train_step(channels_last, optimizers["channels_last"], images_cl, labels),
            **{name: call for name, (call, _) in kernels.items()},
        },
        repeats=steps or case.steps,
        warmup=1,
    )
    matmul_gflops = {name: round(n / median(seconds[name]) / 1e9, 1) for name, (_, n) in kernels.items()}
    peak = max(matmul_gflops.values())
    result = {
        "net": case.label,
        "image_size": case.image_size,
        "batch": case.batch,
        "steps": len(seconds["nchw"]),
        "gflop_per_step": round(flops / 1e9, 2),
        "gflop_per_image": round(flops / case.batch / 1e9, 3),
        "matmul_gflops": matmul_gflops,
        "matmul_peak_gflops": peak,
    }
    for name in ("nchw", "channels_last"):
        step = median(seconds[name])
        result[name] = {
            "step_seconds": [round(s, 4) for s in seconds[name]],
            "images_per_second": round(case.batch / step, 1),
            "gflops": round(flops / step / 1e9, 1),
            "share_of_peak": round(flops / step / 1e9 / peak, 2),
        }
    result["channels_last_ratio"] = round(
        result["channels_last"]["images_per_second"] / result["nchw"]["images_per_second"], 2
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.compute", __doc__)
    parser.add_argument("--nets", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, default=None, help="timed steps of each format (default: per net)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: batch 2, 64 px instead of 224, 1 step, 512x512 matmul"
    )
    add_out_option(parser, "compute.json")
    args = parser.parse_args(argv)

    results = []
    for name in args.nets:
        case = CASES[name]
        if args.quick:
            case = NetCase(case.label, case.build, min(case.image_size, 64), 2, 1)
        print(f"{case.label}: batch {case.batch}, NCHW, channels_last and the matmuls take turns ...", flush=True)
        results.append(measure(case, args.steps, 512 if args.quick else MATMUL_SIZE))
    report = {
        "benchmark": "compute",
        "what": "training step (forward, backward, SGD) on a random batch; FLOPs by FlopCounterMode (forward + backward)",
        "matmul": f"fp32, size {512 if args.quick else MATMUL_SIZE}: torch.mm (MKL) and a 1x1 convolution (oneDNN), "
        "interleaved with the steps; the peak is the faster",
        "quick": args.quick,
        "machine": machine(),
        "nets": results,
    }
    return publish(report, args.out, print_table)


def print_table(report: dict) -> None:
    rows = [
        (
            r["net"],
            r["batch"],
            r["gflop_per_image"],
            r["nchw"]["images_per_second"],
            r["nchw"]["gflops"],
            f"{r['nchw']['share_of_peak']:.0%}",
            r["channels_last"]["images_per_second"],
            r["channels_last"]["gflops"],
            f"{r['channels_last']['share_of_peak']:.0%}",
            r["channels_last_ratio"],
            f"{r['matmul_gflops']['matmul_mkl']} / {r['matmul_gflops']['matmul_onednn']}",
        )
        for r in report["nets"]
    ]
    print(
        f"\nTraining step, {report['machine']['torch_threads']} torch threads, medians "
        f"(FLOPs: forward + backward; peak: the faster fp32 matmul, measured alongside)"
    )
    print(
        format_table(
            [
                "net",
                "batch",
                "GFLOP/img",
                "img/s",
                "GFLOP/s",
                "of peak",
                "img/s CL",
                "GFLOP/s CL",
                "of peak CL",
                "CL/NCHW",
                "matmul GFLOP/s MKL / oneDNN",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
