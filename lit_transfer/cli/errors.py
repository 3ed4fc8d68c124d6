"""Error translation: a user's mistake becomes one line on stderr and exit status 2, not a traceback.

Mistakes are raised as ``UserError`` anywhere in lit_transfer; jsonargparse's own (a bad value, an
unknown class) are shortened by ``one_line``. Programming errors keep their traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.cli import LightningArgumentParser

from lit_transfer.cli.overview import program_name
from lit_transfer.errors import UserError, first_line

# Class paths that moved, for configs and checkpoints written before the move: old prefix -> new.
RENAMED_CLASS_PATHS = {"lit_transfer.tasks.": "lit_transfer.models."}

_NOISE = (
    "Does not validate against",
    "Subtypes:",
    "Errors",
    "Given value",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
    "Problem with given class_path",
)


def renamed_class_path(class_path: str) -> str | None:
    """The current name of a class path that moved, or None."""
    for old, new in RENAMED_CLASS_PATHS.items():
        if class_path.startswith(old):
            return new + class_path[len(old) :]
    return None


def one_line(message: str) -> str:
    """jsonargparse explains a bad value as a nested, many-line tree; keep the full key and the most
    specific reason, e.g. ``model.optimizer.lr: Expected a <class 'float'>``."""
    keys, details, class_paths = [], [], []
    for raw in str(message).splitlines():
        line = raw.strip().lstrip("- ").strip()
        keys += re.findall(r'Parser key "([^"]+)"', line)
        class_paths += re.findall(r"given class_path '([^']+)'", line)
        class_paths += re.findall(r"\b(lit_transfer(?:\.\w+)+)", line)
        line = re.sub(r'Parser key "[^"]+":?', "", line)
        line = re.sub(r"^Type .*? expects a function or a callable class: ", "", line)
        line = re.sub(r"\. Got value: .*$", "", line).strip(" :")
        if line and not line.startswith(_NOISE):
            details.append(line)
    detail = details[0] if details else " ".join(str(message).split())
    if "has no attribute" in detail or "No module named" in detail:
        moved = next(((old, new) for old in class_paths if (new := renamed_class_path(old))), None)
        if moved:
            detail = f"class_path {moved[0]} is now {moved[1]}: change it in the config (or on the command line)"
        else:
            detail = f"unknown class_path ({detail})"
    key = ".".join(dict.fromkeys(keys))
    return f"{key}: {detail}" if key else detail


class Parser(LightningArgumentParser):
    """Argument parser whose user errors are one line and exit status 2."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        sys.stderr.write(f"lit_transfer: error: {one_line(message)}  (see: {program_name()} --help)\n")
        sys.exit(2)


def user_error_behind(err: BaseException | None) -> UserError | None:
    """The UserError behind ``err``, if any (jsonargparse wraps errors raised while it links or
    instantiates)."""
    while err is not None:
        if isinstance(err, UserError):
            return err
        err = err.__cause__ or err.__context__
    return None


def checkpoint_mismatch(err: BaseException, ckpt_path: str | None, net_name: str) -> UserError | None:
    """torch's "Error(s) in loading state_dict" while a checkpoint is restored, as the user's mistake."""
    lines = str(err).splitlines()
    if not isinstance(err, RuntimeError) or "Error(s) in loading state_dict" not in str(err):
        return None
    reason = lines[1].strip() if len(lines) > 1 else str(err)
    return UserError(
        f"checkpoint {ckpt_path!r} does not fit the network {net_name} configured here ({reason}): use the config "
        "the checkpoint was trained with, or --model.init_from to take only its matching weights"
    )


def trainer_settings_error(err: Exception) -> UserError:
    """Lightning's refusal of the trainer's settings (accelerator, devices, strategy, epochs)."""
    return UserError(f"trainer settings: {first_line(err)}")


@contextmanager
def user_errors_exit() -> Iterator[None]:
    """Inside, a ``UserError`` (raised directly or wrapped by jsonargparse) ends the program with its
    one line on stderr and exit status 2; other exceptions pass unchanged."""
    try:
        yield
    except Exception as err:
        user_error = user_error_behind(err)
        if user_error is None:
            raise
        sys.stderr.write(f"lit_transfer: error: {user_error}\n")
        sys.exit(2)
