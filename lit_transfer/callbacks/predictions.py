"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.files import new_file


def _gather_rows(rows: list[tuple], batch_indices: Any, world_size: int) -> list[tuple]:
    """Under DDP each process predicts its own share of the images (Lightning's DistributedSampler,
    which repeats a few images to even the shares out): collect every process's rows, each image
    once, in data order, so the one CSV file rank 0 writes is complete."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], list):
        batch_indices = batch_indices[0]  # one predict dataloader
    indices = [i for batch in batch_indices or [] for i in batch]
    keyed = list(zip(indices, rows)) if len(indices) == len(rows) else [(row[0], row) for row in rows]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, keyed)
    merged: dict = {}
    for part in gathered:
        for key, row in part:
            merged.setdefault(key, row)
    return [merged[key] for key in sorted(merged)]


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``path,class_name,probability`` for every predicted image to a new CSV file in the
    run's log folder (``default_root_dir`` without a logger) and prints a table of the rows and the file's path. Unreadable images the
    data module left out are listed next to it (``<csv name>-skipped.txt``)."""

    def __init__(self, print_rows: int = 50) -> None:
        super().__init__(write_interval="epoch")
        self.print_rows = print_rows
        self.last_path: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions: Any, batch_indices: Any) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        rows = [
            (path, name, float(p))
            for batch in batches
            for path, name, p in zip(batch["paths"], batch["class_names"], batch["probabilities"])
        ]
        if trainer.world_size > 1:
            rows = _gather_rows(rows, batch_indices, trainer.world_size)
        # Trainer.log_dir is a collective call (a broadcast from rank 0): every process asks.
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.last_path = new_file(folder, "predictions", ".csv")
        with open(self.last_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "class_name", "probability"])
            writer.writerows((path, name, f"{p:.6f}") for path, name, p in rows)
        self._print_table(rows)
        print(f"wrote {len(rows)} predictions to {self.last_path}")
        skipped = trainer.datamodule.skipped if isinstance(trainer.datamodule, ClassificationDataModule) else []
        if skipped:
            listing = self.last_path.with_name(self.last_path.stem + "-skipped.txt")
            listing.write_text("".join(f"{path}\t{reason}\n" for path, reason in skipped))
            print(f"left out {len(skipped)} unreadable image files, listed in {listing}")

    def _print_table(self, rows: list[tuple[str, str, float]]) -> None:
        shown = rows[: self.print_rows]
        width = max([len("path")] + [len(r[0]) for r in shown])
        name_width = max([len("class_name")] + [len(r[1]) for r in shown])
        print(f"{'path':<{width}}  {'class_name':<{name_width}}  probability")
        for path, name, p in shown:
            print(f"{path:<{width}}  {name:<{name_width}}  {p:.4f}")
        if len(rows) > len(shown):
            print(f"... {len(rows) - len(shown)} more rows in the CSV file")
