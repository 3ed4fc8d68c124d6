"""The command line: ``app`` composes LightningCLI with the project's classes, ``checkpoints`` says
what ``--ckpt_path`` means, ``runs`` where runs go, ``errors`` turns a user's mistake into one line and
exit status 2, ``overview`` is the top-level ``--help``. ``app`` (torch, Lightning) is imported only
when a subcommand runs."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from lit_transfer.cli.overview import asks_for_overview, overview

if TYPE_CHECKING:
    from lit_transfer.cli.app import LitTransferCLI

__all__ = ["LitTransferCLI", "main"]


def main(args: list[str] | None = None) -> LitTransferCLI | None:
    if asks_for_overview(list(sys.argv[1:] if args is None else args)):
        print(overview(), end="")
        return None
    from lit_transfer.cli import app

    return app.main(args)


def __getattr__(name: str) -> Any:
    if name == "LitTransferCLI":
        from lit_transfer.cli.app import LitTransferCLI

        return LitTransferCLI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
