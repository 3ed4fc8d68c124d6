"""Run folders, their names, and which checkpoint ``--ckpt_path last`` means.

A fit writes ``<root>/lightning_logs/<run name>/version_<n>``: the run name is ``--run_name``, else
the first ``--config`` file's name (``configs/demo.yaml`` -> ``demo``), else ``<data>-<net>``
(``shapes-simplecnn``), so TensorBoard tells the tasks apart. validate, test and predict write into
the run folder of the checkpoint they evaluate (``<run>/<command>-<date>-<time>``), not a new run.
``--ckpt_path last`` looks only among the runs of the same name, for the newest checkpoint that
holds a whole training state and was trained with the same model and net.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_transfer.cli.checkpoints import Checkpoint
from lit_transfer.cli.errors import renamed_class_path
from lit_transfer.errors import UserError
from lit_transfer.files import newest_complete

LOGS = "lightning_logs"


def _class_name(spec: Any) -> str:
    """The class name of a ``{"class_path": ...}`` config entry ("" when there is none)."""
    class_path = spec.get("class_path") if hasattr(spec, "get") else None
    return str(class_path or "").rsplit(".", 1)[-1]


def run_name(config: Any) -> str:
    """The name of a run of ``config`` (one subcommand's parsed settings)."""
    name = config.get("run_name")
    if name:
        if not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
            raise UserError(f"run_name {name!r}: use letters, digits, '.', '-' and '_' only (it names a folder)")
        return name
    configs = config.get("config") or []
    if configs:
        return Path(str(configs[0])).stem
    model = config.get("model") or {}
    data = _class_name(config.get("data") or {}).removesuffix("DataModule")
    net = _class_name((model.get("init_args") or {}).get("net") or {}) or _class_name(model)
    return "-".join(part.lower() for part in (data, net) if part) or "run"


@dataclass
class RunFolder:
    """``<logs>/<name>/version_<version>``: the folder of one fit (``name`` is "" for a run written
    before runs had names, directly under ``lightning_logs``)."""

    logs: Path
    name: str
    version: int

    @property
    def path(self) -> Path:
        return self.logs / self.name / f"version_{self.version}"

    @classmethod
    def holding(cls, checkpoint: Path) -> RunFolder | None:
        """The run folder ``checkpoint`` lies in (``<run>/checkpoints/<file>``), or None."""
        path = checkpoint.resolve()
        version_folder = path.parent.parent
        number = version_folder.name.removeprefix("version_")
        if path.parent.name != "checkpoints" or not version_folder.name.startswith("version_") or not number.isdigit():
            return None
        above = version_folder.parent
        if above.name == LOGS:
            return cls(above, "", int(number))
        if above.parent.name == LOGS:
            return cls(above.parent, above.name, int(number))
        return None


def run_to_continue(checkpoint: Checkpoint) -> RunFolder | None:
    """The run a fit from ``checkpoint`` continues in: the run folder the checkpoint lies in, when it
    is that run's newest checkpoint. None for a checkpoint outside a run folder, and for an older one:
    going on from there is a branch, which gets its own folder so the run's newer checkpoints stay."""
    run = RunFolder.holding(checkpoint.path)
    if run is None:
        return None
    path = checkpoint.path.resolve()
    if newest_complete(path.parent.glob("*.ckpt"))[0].resolve() != path:
        print(f"{path.name} is not the newest checkpoint of {run.path}: this run gets a folder of its own")
        return None
    return run


def _model_of(settings: dict[str, Any]) -> tuple[str, str]:
    """(model class, net class) of a checkpoint's saved model settings."""
    class_path = settings.get("_class_path") or ""
    model = (renamed_class_path(class_path) or class_path).rsplit(".", 1)[-1]
    return model, _class_name(settings.get("net") or {})


def last_of_run(root: str | None, name: str, model: Any, full_state: bool = True) -> Checkpoint:
    """``--ckpt_path last``: the newest sound checkpoint of the runs named ``name`` under ``root`` that
    holds a whole training state (unless ``full_state`` is false) and was trained with the model and
    net of ``model`` (the parsed ``model`` settings; None: any). Damaged checkpoints and other models'
    are passed over, each said."""
    folder = Path(root or ".") / LOGS / name
    wanted = (
        None if model is None else (_class_name(model), _class_name((model.get("init_args") or {}).get("net") or {}))
    )
    for path in newest_complete(folder.glob("version_*/checkpoints/*.ckpt")):
        try:
            checkpoint = Checkpoint.read(path)
        except UserError as err:
            print(f"--ckpt_path last: passing over {path}: {err}")
            continue
        if full_state and not checkpoint.full_state:  # a "best" checkpoint: weights only
            continue
        found = _model_of(checkpoint.model_settings)
        if wanted is not None and found != wanted:
            print(f"--ckpt_path last: passing over {path}: trained with {'/'.join(found)}, not {'/'.join(wanted)}")
            continue
        print(f"--ckpt_path last: using {path}")
        return checkpoint
    raise UserError(
        f"--ckpt_path last: no checkpoint of run {name!r} to go on from in {folder}: start it without --ckpt_path"
        " (or give the checkpoint's path)"
    )
