"""Loading checkpoints and weight files safely: tensors and plain containers only, never code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lit_transfer.errors import UserError


def safe_load(path: str | Path, what: str = "file", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with a user error for a missing, truncated or
    unsafe (pickled-code) file instead of a traceback. ``mmap`` reads only what is used, for a
    quick look at a large checkpoint's hyperparameters."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):  # not a torch file at all
            raise UserError(f"{what} {str(path)!r} is not a torch file ({str(err).splitlines()[0]})") from err
        raise UserError(
            f"{what} {str(path)!r} holds pickled Python objects, not only tensors, and was refused "
            "(loading it could run code): re-save it as a plain state_dict"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{what} {str(path)!r} cannot be read ({first}): it may be truncated or not a torch file"
        ) from err
