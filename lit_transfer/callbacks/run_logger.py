"""The run folder: TensorBoard's logger with a version folder that a run claims atomically, continues
when it resumes, and gives back when it fails before it trained."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_transfer.files import claim_numbered_folder


class RunLogger(TensorBoardLogger):
    """``TensorBoardLogger`` under ``<save_dir>/lightning_logs/version_<n>``.

    A new run (``version=None``) claims the next free ``version_<n>`` with one ``mkdir`` when its folder
    is first needed (TensorBoardLogger's own choice, the highest listed number plus one, gives runs
    started together the same folder). Only global rank 0 claims; the other processes of a DDP run
    never write there (Lightning broadcasts rank 0's folders). A resumed run passes the version of the
    run it continues.
    """

    def __init__(self, save_dir: str, version: int | None = None) -> None:
        super().__init__(save_dir=save_dir, version=version)
        self.claimed = False

    # Overridden because TensorBoardLogger has no public way to choose the version lazily.
    def _get_next_version(self) -> int:
        if rank_zero_only.rank != 0:
            return super()._get_next_version()
        self.claimed = True
        return claim_numbered_folder(self.root_dir, "version_")

    def discard_if_unused(self) -> None:
        """Remove the folder this run claimed unless a checkpoint was written there. For a run that
        failed before its first training step, so failed starts leave no folders behind."""
        if not self.claimed or rank_zero_only.rank != 0:
            return
        folder = Path(self.log_dir)
        if not any(folder.glob("checkpoints/*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)
