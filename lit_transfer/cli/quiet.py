"""Quiet by default: the third-party messages a user of this project cannot act on are left out, each
named here with the reason; every other warning still shows."""

from __future__ import annotations

import logging
import warnings

# Warnings, as regular expressions matched against the start of their text.
_WARNINGS = (
    # Lightning 2.6 calls a torch API that torch deprecated; nothing for a user to change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # validate/test/predict restore the checkpoint's ModelCheckpoint state into a new folder; harmless.
    r"The dirpath has changed from",
    # predict, or a config without seed_everything: the run says its seed anyway.
    r"No seed found, seed set to",
    # Once per loader; data.num_workers is the user's documented choice, capped at the usable CPUs.
    r"The '\w+' does not have many workers which may be a bottleneck",
    # A resumed fit continues in its run folder, which holds checkpoints: that is the point of it (a new
    # run's folder is always empty).
    r"Checkpoint directory .* exists and is not empty",
)
# Lines Lightning logs: at every start, an advertisement for a cloud service; during lr_find, the
# temporary checkpoint it saves and restores (and removes).
_LOG_LINES = ("litlogger", "`weights_only` was not set", ".lr_find_")
_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector")


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _LOG_LINES)


def quiet_third_party() -> None:
    """Install the filters; calling it again adds nothing."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines())
