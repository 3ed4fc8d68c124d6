"""Callbacks the CLI adds to a run: early stopping and an average of the weights (both off by default), the predictions CSV, the TensorBoard report, channels_last, the
random states in checkpoints, checkpoint files written atomically (a ``CheckpointIO`` plugin) and the
run's own folder (a TensorBoard logger)."""

from lit_transfer.callbacks.channels_last import ChannelsLast, channels_last_pays
from lit_transfer.callbacks.checkpoint_io import AtomicCheckpointIO
from lit_transfer.callbacks.early_stopping import EarlyStop
from lit_transfer.callbacks.ema import EMA
from lit_transfer.callbacks.predictions import PredictionCSVWriter
from lit_transfer.callbacks.report import ValidationReport
from lit_transfer.callbacks.rng_state import RNGStateCheckpoint
from lit_transfer.callbacks.run_logger import RunLogger

__all__ = [
    "AtomicCheckpointIO",
    "ChannelsLast",
    "EMA",
    "EarlyStop",
    "PredictionCSVWriter",
    "RNGStateCheckpoint",
    "RunLogger",
    "ValidationReport",
    "channels_last_pays",
]
