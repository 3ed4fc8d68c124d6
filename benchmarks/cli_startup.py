"""Command-line start-up: seconds until ``--help`` has printed, the top-level page against a subcommand's.

The top-level ``--help`` (``lit_transfer.cli.overview``) imports neither torch nor Lightning; a
subcommand's ``--help`` is LightningCLI's, built after both are imported. Measured side by side, taking
turns, each a fresh ``python -m lit_transfer`` process; ``python -c "import torch"`` is timed with them
as the floor of anything that needs torch.

    python -m benchmarks.cli_startup
    python -m benchmarks.cli_startup --repeats 3
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks.common import REPO, add_out_option, benchmark_parser, format_table, interleave, machine, median, publish

COMMANDS = {
    "lit-transfer --help": ["-m", "lit_transfer", "--help"],
    "lit-transfer fit --help": ["-m", "lit_transfer", "fit", "--help"],
    "import torch": ["-c", "import torch"],
}


def run(repeats: int) -> dict:
    def call(args: list[str]):
        return lambda: subprocess.run([sys.executable, *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)

    seconds = interleave({name: call(args) for name, args in COMMANDS.items()}, repeats=repeats)
    return {
        "benchmark": "cli_startup",
        "repeats": repeats,
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "median_seconds": {name: round(median(values), 3) for name, values in seconds.items()},
        "machine": machine(),
    }


def print_table(report: dict) -> None:
    rows = [(name, f"{value:.2f}") for name, value in report["median_seconds"].items()]
    print(format_table(["command", "median s"], rows))


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("benchmarks.cli_startup", __doc__)
    parser.add_argument("--repeats", type=int, default=5)
    add_out_option(parser, "cli_startup.json")
    args = parser.parse_args(argv)
    return publish(run(args.repeats), args.out, print_table)


if __name__ == "__main__":
    main()
