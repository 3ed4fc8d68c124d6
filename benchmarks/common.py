"""What the benchmarks share: their command-line options, the data folder or its synthetic stand-in,
interleaved timing, the machine's description, peak memory, a plain-text table and the JSON file."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The real data sets: $LIT_TRANSFER_DATA, else ../shared/data next to the repository.
DEFAULT_DATA = Path(os.environ.get("LIT_TRANSFER_DATA") or REPO.parent / "shared" / "data")


# -- command line ----------------------------------------------------------------------------------
def benchmark_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, described by the first line of the module's docstring:
    every benchmark's ``--help`` starts the same way."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])


def add_data_option(parser: argparse.ArgumentParser, subset: str | Path) -> None:
    """``--data``: the shared data folder holding ``subset`` (generated images stand in without it)."""
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"folder holding {subset}/")


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """``--num-workers``: one DataLoader setting for both sides of a comparison, so it is fair."""
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers, the same for both")


def add_out_option(parser: argparse.ArgumentParser, filename: str) -> None:
    """``--out``: the JSON result, by default ``benchmarks/results/<filename>``."""
    parser.add_argument("--out", default=str(RESULTS / filename))


# -- data ------------------------------------------------------------------------------------------
def real_or_synthetic(
    data: str | Path, subset: str | Path, generate: Callable[[], Path], real: str, synthetic: str
) -> tuple[Path, str]:
    """``<data>/<subset>`` when it is there, else the folder ``generate()`` writes; and the note that
    says which, printed now and kept for the report: numbers measured on generated images must say so.
    The note is ``real <real> <folder>``, or ``synthetic`` with ``{root}`` (the generated folder),
    ``{subset}`` and ``{data}`` filled in."""
    root = Path(data) / subset
    if root.is_dir():
        note = f"real {real} {root}"
    else:
        root = generate()
        note = synthetic.format(root=root, subset=subset, data=data)
    print(f"data: {note}", flush=True)
    return root, note


def write_flat_cats_dogs(
    root: Path, per_class: int, picture: Callable[[str, int], Image.Image], **save_options: Any
) -> Path:
    """Generated stand-ins for the Kaggle dogs-vs-cats subset, in its flat layout (``cat.<n>.jpg``,
    ``dog.<n>.jpg``, the label in the name): ``picture(label, n)`` draws each. Timing only."""
    root.mkdir(parents=True)
    for label in ("cat", "dog"):
        for n in range(per_class):
            picture(label, n).save(root / f"{label}.{n}.jpg", **save_options)
    return root


# -- measuring -------------------------------------------------------------------------------------
def interleave(candidates: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each candidate, taking turns (A, B, A, B, ...): on a machine shared
    with other work both then see the same load, which one run after the other would not.
    ``warmup`` untimed rounds come first (caches, worker start, oneDNN's first-call setup)."""
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(warmup + repeats):
        for name, call in candidates.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size so far of this process and of its largest finished child (DataLoader
    workers), in MiB (Linux reports ru_maxrss in KiB)."""
    return {
        "self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    """The ``versions`` entry of the training benchmarks' JSON (torch, Lightning, Python), kept with
    these keys so new results compare with those already written; ``machine()`` says more."""
    import lightning
    import torch

    return {"torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version()}


def _installed_version(package: str) -> str | None:
    """A package's version without importing it (TorchCodec may be installed but not load)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine and the library versions a result was measured with."""
    import lightning
    import PIL
    import torch
    import torchvision

    from lit_transfer.data.base import usable_cpus

    return {
        "cpu": _cpu_model(),
        "usable_cores": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "lightning": lightning.__version__,
            "pillow": PIL.__version__,
            "torchcodec": _installed_version("torchcodec"),
        },
    }


# -- report ----------------------------------------------------------------------------------------
def format_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    widths: Sequence[int] | None = None,
    align: str | None = None,
    gap: str = "  ",
    rule: str | None = "columns",
) -> str:
    """A table as text; None prints as ``-``. By default the first column left-aligned and the others
    right-aligned, each as wide as its widest cell, two spaces apart, dashes under each heading.
    The keywords keep the layout of tables first printed with f-strings (their output is quoted):
    ``widths`` fixed (a longer cell is not cut), ``align`` a ``<`` or ``>`` per column, ``gap`` between
    columns, ``rule`` the line under the headings: ``"columns"``, ``"full"`` (unbroken) or None.
    A row may have fewer cells than there are columns."""
    cells = [[str(c) for c in columns]] + [["-" if v is None else str(v) for v in row] for row in rows]
    if widths is None:
        widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(columns))]
    align = align or "<" + ">" * (len(columns) - 1)
    lines = [gap.join(v.ljust(w) if a == "<" else v.rjust(w) for v, w, a in zip(row, widths, align)) for row in cells]
    if rule == "columns":
        lines.insert(1, gap.join("-" * w for w in widths))
    elif rule == "full":
        lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path: str | Path, report: dict) -> Path:
    """``report`` as indented JSON at ``path`` (its folder made as needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def publish(report: dict, out: str | Path, print_table: Callable[[dict], None]) -> dict:
    """How every benchmark ends: its table printed, its JSON written to ``out`` and where said."""
    print_table(report)
    print(f"wrote {write_json(out, report)}")
    return report
