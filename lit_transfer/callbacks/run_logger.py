"""The run folder: TensorBoard's logger with a folder that a run claims atomically, continues when it
resumes, and gives back when it fails before it trained."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_transfer.files import claim_numbered_folder, claim_stamped_folder


class RunLogger(TensorBoardLogger):
    """``TensorBoardLogger`` writing to ``<save_dir>/<name>/<folder>``.

    A fit (``command="fit"``) claims the next free ``version_<n>``; validate, test and predict claim
    ``<command>-<date>-<time>``. The claim is one ``mkdir`` when the folder is first needed
    (TensorBoardLogger's own choice, the highest listed number plus one, gives runs started together
    the same folder). Only global rank 0 claims; the other processes of a DDP run never write there
    (Lightning broadcasts rank 0's folders). A resumed fit passes the version of the run it continues.
    """

    def __init__(self, save_dir: str | Path, name: str, version: int | None = None, command: str = "fit") -> None:
        super().__init__(save_dir=save_dir, name=name, version=version)
        self.command = command
        self.claimed = False

    # Overridden because TensorBoardLogger has no public way to choose the version lazily.
    def _get_next_version(self) -> int | str:
        if rank_zero_only.rank != 0:
            return super()._get_next_version()
        self.claimed = True
        if self.command == "fit":
            return claim_numbered_folder(self.root_dir, "version_")
        return claim_stamped_folder(self.root_dir, self.command)

    def discard_if_unused(self) -> None:
        """Remove the folder this run claimed unless a checkpoint was written there. For a run that
        failed before its first training step, so failed starts leave no folders behind."""
        if not self.claimed or rank_zero_only.rank != 0:
            return
        folder = Path(self.log_dir)
        if not any(folder.glob("checkpoints/*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)
