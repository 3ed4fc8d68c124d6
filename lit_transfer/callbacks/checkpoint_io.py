"""Checkpoint files that a kill never leaves half-written."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_transfer.files import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, flushes it to disk, then renames it
    (``lit_transfer.files.atomic_file``).

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the system
    temp folder; when that is another file system (a tmpfs /tmp, say) the final "move" is a copy, and
    a kill during the copy leaves a truncated checkpoint under the real name. It also never fsyncs.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        with atomic_file(path) as f:
            torch.save(checkpoint, f)
