"""Reading a flag's value from the raw command line, before (or without) a parser: torch-free, so the
commands that need no torch (the overview, predict from an ONNX file) stay quick to start."""

from __future__ import annotations


def arg_value(args: list[str], name: str) -> str | None:
    """The value of ``name`` in ``args`` (``--name value`` or ``--name=value``), the last one given."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value
