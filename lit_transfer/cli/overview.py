"""``lit-transfer --help``: the page that lists the subcommands, printed without importing torch.

LightningCLI builds its parser only after importing torch and Lightning (4-6 s on a small machine); the
top-level page needs neither, so it is written here. Each subcommand's own ``--help`` is LightningCLI's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lit_transfer import __version__

# The CLI's subcommands, in its order (tests/test_foundation.py checks them against LitTransferCLI).
SUBCOMMANDS = {
    "fit": "train a model; --ckpt_path last (or a checkpoint file) resumes a run",
    "validate": "evaluate a checkpoint on the validation images",
    "test": "evaluate a checkpoint on the test images (val/ when there is no test/)",
    "predict": "write a CSV of class predictions for --data.predict_root (a file or a folder)",
    "lr_find": "suggest a learning rate (Lightning's range test; groups scaled together)",
    "export": "write a checkpoint's net as ONNX, TorchScript or a torch.export program, checked against it",
}


def program_name() -> str:
    """How the user called us: the ``lit-transfer`` console script or ``python -m lit_transfer``."""
    return "lit-transfer" if Path(sys.argv[0]).name == "lit-transfer" else "python -m lit_transfer"


def asks_for_overview(args: list[str]) -> bool:
    """``--help`` (or ``-h``) with no subcommand."""
    return bool(args) and args[0] in ("-h", "--help")


def overview() -> str:
    prog = program_name()
    width = max(len(name) for name in SUBCOMMANDS)
    commands = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    return f"""usage: {prog} [-h] {{{",".join(SUBCOMMANDS)}}} ...

Image classification and transfer learning on PyTorch Lightning (lit_transfer {__version__}).

subcommands:
{commands}

options:
  -h, --help  show this page; `{prog} <subcommand> --help` lists the options of a subcommand

examples:
  {prog} fit --config configs/demo.yaml
  {prog} fit --config configs/demo.yaml --ckpt_path last
  {prog} predict --ckpt_path <run>/checkpoints/last.ckpt --data.predict_root <images>
  {prog} export --ckpt_path <run>/checkpoints/last.ckpt --format onnx
  {prog} fit --data.help lit_transfer.data.ImageFolderDataModule
"""
