"""What ``--ckpt_path`` means: ``last`` resolved to a file, the file read once, and its saved settings
turned into command-line defaults.

A checkpoint saves the model's and the data module's settings (``hyper_parameters``,
``datamodule_hyper_parameters``). They are put in front of the user's arguments, so the user's config
and flags override them and ``predict --ckpt_path X --data.predict_root imgs`` needs no config: the
net, the class names and the evaluation transforms come from the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_transfer.cli.args import arg_value
from lit_transfer.cli.errors import renamed_class_path
from lit_transfer.errors import UserError, some
from lit_transfer.files import non_finite, safe_load

CKPT_FLAG = "--ckpt_path"


@dataclass
class Checkpoint:
    """A checkpoint file, checked sound, and the settings it was trained with."""

    path: Path
    model_settings: dict[str, Any]
    data_settings: dict[str, Any]
    full_state: bool  # the whole training state (optimizer included), as "last" keeps; "best" keeps weights

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        """Read the settings of the checkpoint at ``path`` after checking that its bytes are intact
        (``safe_load``) and its weights finite: a damaged or diverged file would otherwise load silently
        and train on, or evaluate, NaN weights."""
        # mmap: the tensors are read only to be checked; the trainer loads them when it restores.
        ckpt = safe_load(path, "checkpoint", mmap=True)
        if not isinstance(ckpt, dict):
            raise UserError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, not a Lightning checkpoint")
        bad = non_finite(ckpt.get("state_dict") or {})
        if bad:
            raise UserError(
                f"checkpoint {str(path)!r} holds NaN or infinite weights ({len(bad)} tensors: "
                f"{some(bad, limit=3)}): use an earlier checkpoint"
            )
        return cls(
            path,
            dict(ckpt.get("hyper_parameters") or {}),
            dict(ckpt.get("datamodule_hyper_parameters") or {}),
            full_state="optimizer_states" in ckpt,
        )

    @property
    def class_names(self) -> list[str] | None:
        return self.model_settings.get("class_names")

    def as_arguments(self) -> list[str]:
        """``--model <spec> --data <spec>`` for the settings saved with a class path."""
        arguments = []
        for flag, settings in (("--model", self.model_settings), ("--data", self.data_settings)):
            if "_class_path" in settings:
                class_path = renamed_class_path(settings["_class_path"]) or settings["_class_path"]
                init_args = {k: v for k, v in settings.items() if not k.startswith("_")}
                arguments += [flag, json.dumps({"class_path": class_path, "init_args": init_args})]
        return arguments


def read_checkpoint(ckpt_path: str) -> Checkpoint:
    """The checkpoint file ``--ckpt_path`` names (``last`` is resolved in ``cli.runs``), read and checked."""
    path = Path(ckpt_path).expanduser()
    if not path.exists():
        raise UserError(f"checkpoint {ckpt_path!r} does not exist: check --ckpt_path")
    return Checkpoint.read(path)


def with_checkpoint(args: list[str], checkpoint: Checkpoint) -> list[str]:
    """``args`` (subcommand first) with ``--ckpt_path`` naming the file and the checkpoint's settings
    in front of the user's, as defaults."""
    path = str(checkpoint.path)
    if arg_value(args, CKPT_FLAG) is None:  # named in a config file: the flag overrides it
        args = [*args, CKPT_FLAG, path]
    replaced = []
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == CKPT_FLAG:
            arg = path
        elif arg.startswith(CKPT_FLAG + "="):
            arg = f"{CKPT_FLAG}={path}"
        replaced.append(arg)
    return [replaced[0], *checkpoint.as_arguments(), *replaced[1:]]
