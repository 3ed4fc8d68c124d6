"""The command line: ``app`` composes LightningCLI with the project's classes, ``checkpoints`` says
what ``--ckpt_path`` means, ``errors`` turns a user's mistake into one line and exit status 2."""

from lit_transfer.cli.app import LitTransferCLI, main

__all__ = ["LitTransferCLI", "main"]
