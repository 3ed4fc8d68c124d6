"""The command line: ``app`` composes LightningCLI with the project's classes, ``checkpoints`` says
what ``--ckpt_path`` means, ``runs`` where runs go, ``errors`` turns a user's mistake into one line and
exit status 2, ``overview`` is the top-level ``--help``, ``export`` writes a checkpoint's net for deployment. ``app`` (torch, Lightning) is imported only
when a subcommand runs."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from lit_transfer.cli.args import arg_value
from lit_transfer.cli.overview import asks_for_overview, overview

if TYPE_CHECKING:
    from lit_transfer.cli.app import LitTransferCLI

__all__ = ["LitTransferCLI", "main"]


def main(args: list[str] | None = None) -> LitTransferCLI | None:
    args = list(sys.argv[1:] if args is None else args)
    if asks_for_overview(args):
        print(overview(), end="")
        return None
    if args[:1] == ["export"]:  # plain argparse: it needs no config, data or trainer
        from lit_transfer.cli import export
        from lit_transfer.cli.errors import user_errors_exit

        with user_errors_exit():
            export.main(args[1:])
        return None
    if args[:1] == ["predict"] and str(arg_value(args, "--ckpt_path")).endswith(".onnx"):
        from lit_transfer.cli.onnx_predict import predict_onnx

        predict_onnx(args[1:])
        return None
    from lit_transfer.cli import app

    return app.main(args)


def __getattr__(name: str) -> Any:
    if name == "LitTransferCLI":
        from lit_transfer.cli.app import LitTransferCLI

        return LitTransferCLI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
