"""Checkpoint files that a kill never leaves half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_transfer.errors import UserError, first_line
from lit_transfer.files import atomic_file, newest_complete


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, flushes it to disk, then renames it
    (``lit_transfer.files.atomic_file``).

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the system
    temp folder; when that is another file system (a tmpfs /tmp, say) the final "move" is a copy, and
    a kill during the copy leaves a truncated checkpoint under the real name. It also never fsyncs.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        try:
            with atomic_file(path) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and not _is_write_failure(err):
                raise
            intact = newest_complete(Path(path).parent.glob("*.ckpt"))
            if not intact:
                last = "no checkpoint of this run is intact"
            elif intact[0] == Path(path):
                last = f"the last intact checkpoint is {path}, still as it was before this write"
            else:
                last = f"the last intact checkpoint is {intact[0]}"
            raise UserError(
                f"cannot write checkpoint {path} ({first_line(err)}): is the disk full? {last}; free some space "
                "and resume with --ckpt_path last"
            ) from err


def _is_write_failure(err: RuntimeError) -> bool:
    """torch.save reports a failed write (a full disk) as a RuntimeError from its zip writer."""
    return any(text in str(err) for text in ("PytorchStreamWriter", "unexpected pos", "file write failed"))
