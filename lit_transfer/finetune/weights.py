"""Where pretrained weights come from and how they are loaded into a net, one place for every net.

``weights`` (the model's ``--model.weights``) is one of:

- ``None``: keep the net's random initialisation;
- ``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...: a member of the net's own torchvision weights enum (the
  net says which torchvision model it is: ``ClassifierNet.weights_family``);
- ``"AlexNet_Weights.IMAGENET1K_V1"``: any torchvision weights name;
- ``"/path/to/file.pth"``: a local file, read with ``safe_load`` (tensors only, never code).

Torchvision weights go through torchvision's weights API, so a file already in
``$TORCH_HOME/hub/checkpoints/`` is used without a download. Whatever the source, tensors are
matched to the net by name and shape; the rest is left out and reported (a new head is expected
among it), and a file that matches nothing is a user error rather than a silent random init.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlparse

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchvision.models import get_model_weights, get_weight

from lit_transfer.errors import UserError, first_line, some
from lit_transfer.files import non_finite, safe_load
from lit_transfer.nets.base import ClassifierNet

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
# Checkpoint dicts that hold the weights under one key: Lightning ("state_dict"), the PyTorch
# saving tutorial ("model_state_dict"), and common training scripts ("model", "net").
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Added in front of every key by nn.DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What ``load_state_dict_matching`` did: net keys loaded, file keys left out, net keys left alone."""

    source: str
    net_name: str
    loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # file keys with no net key of that name
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, file shape, net shape)
    missing: list[str] = field(default_factory=list)  # net keys that kept their initial values

    def summary(self) -> str:
        skipped = len(self.unused) + len(self.mismatched)
        lines = [f"weights {self.source}: loaded {len(self.loaded)} tensors into {self.net_name}, skipped {skipped}"]
        if self.mismatched:
            shapes = [f"{k} (file {list(a)}, net {list(b)})" for k, a, b in self.mismatched]
            lines.append("  skipped, shape differs: " + some(shapes))
        if self.unused:
            lines.append("  skipped, not in the net: " + some(self.unused))
        if self.missing:
            lines.append("  not in the file, left as initialised: " + some(self.missing))
        return "\n".join(lines)


def load_pretrained(net: ClassifierNet, weights: str | None, progress: bool = True) -> LoadReport | None:
    """Load ``weights`` (see the module docstring) into ``net``; log and return what was loaded."""
    if weights is None:
        return None
    state_dict, source = read_weights(weights, net, progress=progress)
    report = load_state_dict_matching(net, state_dict, source)
    rank_zero_info(report.summary())
    backbone_missing = [k for k in report.missing if not net.in_head(k)]
    if backbone_missing:
        rank_zero_warn(
            f"{len(backbone_missing)} tensors outside the head of {report.net_name} were not in {source} and keep "
            f"their random initialisation: {some(backbone_missing)}"
        )
    return report


def is_weights_path(weights: str) -> bool:
    """A file path rather than a torchvision weights name."""
    return (
        weights.lower().endswith(WEIGHT_FILE_SUFFIXES)
        or "/" in weights
        or os.sep in weights
        or weights.startswith("~")
        or Path(weights).is_file()
    )


def read_weights(weights: str, net: ClassifierNet, progress: bool = True) -> tuple[dict[str, Tensor], str]:
    """The tensors of a weights name or file, keyed as in the file (wrappers undone), and a description."""
    if is_weights_path(weights):
        return unwrap_state_dict(safe_load(weights, what="weights file"), weights), f"file {weights!r}"
    enum_member = torchvision_weights(weights, net)
    return download_torchvision_weights(enum_member, progress), f"torchvision {enum_member}"


# -- torchvision names ------------------------------------------------------------------------
def torchvision_weights(name: str, net: ClassifierNet):
    """The torchvision ``WeightsEnum`` member that ``name`` means for ``net``."""
    model_name = net.weights_family
    enum = get_model_weights(model_name) if model_name else None
    valid = _valid_names(enum)
    if "." in name:  # "AlexNet_Weights.IMAGENET1K_V1"
        try:
            member = get_weight(name)
        except (ValueError, KeyError):
            raise UserError(
                f"unknown torchvision weights {name!r}: use one of {valid} or a path to a .pth file"
            ) from None
        if enum is not None and type(member) is not enum:
            raise UserError(f"weights {name!r} are not for {model_name}: use one of {valid} or a path to a .pth file")
        return member
    if enum is None:
        raise UserError(
            f"{type(net).__name__} is not a torchvision model, so weights {name!r} mean nothing for it: "
            "give a path to a .pth file or null"
        )
    try:
        return enum[name]
    except KeyError:
        raise UserError(
            f"unknown weights {name!r} for {model_name}: use one of {valid} or a path to a .pth file"
        ) from None


def torchvision_weights_of(weights: str, net: ClassifierNet):
    """The torchvision weights member ``weights`` means for ``net``: its name, or a file of that
    member's own file name (as torch.hub saves it, e.g. ``resnet50-11ad3fa6.pth``); else None."""
    if not is_weights_path(weights):
        return torchvision_weights(weights, net)
    enum = get_model_weights(net.weights_family) if net.weights_family else None
    name = Path(weights).name
    return next((member for member in enum or [] if _file_name(member) == name), None)


def _file_name(enum_member) -> str:
    return os.path.basename(urlparse(enum_member.url).path)


def _valid_names(enum) -> str:
    if enum is None:
        return "the names torchvision.models.get_model_weights(<model>) lists (e.g. AlexNet_Weights.DEFAULT)"
    members = list(enum.__members__)
    return ", ".join(members + [f"{enum.__name__}.{m}" for m in members])


def torchvision_cache_file(enum_member) -> Path:
    """Where torch.hub keeps (and first looks for) the file of a torchvision weights member."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _file_name(enum_member)


def download_torchvision_weights(enum_member, progress: bool = True) -> dict[str, Tensor]:
    """The state dict of a torchvision weights member: the cached file if present, else a download.

    ``check_hash`` stays at torch.hub's default (off): a file put in the cache by hand is used as is.
    """
    cached = torchvision_cache_file(enum_member)
    try:
        state_dict = enum_member.get_state_dict(progress=progress, weights_only=True)
    except (OSError, HTTPException, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        # no network, an HTTP error, a truncated or unsafe (pickled code) cached file, ...
        reason = first_line(err)
        if cached.is_file():  # the download (if any) finished, so reading the file failed
            raise UserError(
                f"cached weights file {str(cached)!r} cannot be read safely ({reason}): delete it and retry, "
                "or pass a local file with --model.weights /path/to/file.pth"
            ) from err
        raise UserError(
            f"cannot download {enum_member} from {enum_member.url} ({reason}): put {cached.name} under "
            f"{str(cached.parent)!r} ($TORCH_HOME/hub/checkpoints) or pass a local file with "
            "--model.weights /path/to/file.pth"
        ) from err
    return unwrap_state_dict(state_dict, str(cached))


# -- files ------------------------------------------------------------------------------------
def unwrap_state_dict(obj, source: str) -> dict[str, Tensor]:
    """The tensors of a state dict or of a checkpoint dict that holds one, without wrapper prefixes."""
    if isinstance(obj, nn.Module):  # only reachable for trusted callers: safe_load refuses modules
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise UserError(f"weights {source!r} hold a {type(obj).__name__}, not a state_dict: save model.state_dict()")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(v, Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {_strip_wrappers(str(k)): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise UserError(
            f"weights {source!r} hold no tensors (keys: {some([str(k) for k in obj])}): save model.state_dict()"
        )
    return tensors


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _prefixes(key: str, depth: int = 2) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) + "." for i in range(1, min(depth, len(parts) - 1) + 1)]


def _align(source: dict[str, Tensor], target: dict[str, Tensor]) -> tuple[str, str]:
    """The ``(strip, add)`` prefix pair that maps the most file keys onto net keys of the same shape.

    A file saved from a bare torchvision model has no prefix, our nets keep it under ``model.``, and a
    Lightning checkpoint adds ``net.``; trying the few candidate prefixes avoids a table per source.
    Only prefixes every file key shares are stripped, so unrelated layers are never paired up.
    """
    keys = list(source)
    strips = [""] + [p for p in _prefixes(keys[0]) if all(k.startswith(p) for k in keys)]
    adds = [""] + sorted({p for k in target for p in _prefixes(k)})

    def matches(strip: str, add: str) -> int:
        return sum(
            1 for k, v in source.items() if (t := target.get(add + k[len(strip) :])) is not None and t.shape == v.shape
        )

    scored = [(matches(s, a), -len(s) - len(a), s, a) for s in strips for a in adds]
    _, _, strip, add = max(scored)
    return strip, add


def load_state_dict_matching(net: nn.Module, source: dict[str, Tensor], source_name: str) -> LoadReport:
    """Copy the tensors of ``source`` whose (aligned) names and shapes match ``net``; report the rest."""
    target = net.state_dict()
    report = LoadReport(source=source_name, net_name=type(net).__name__)
    strip, add = _align(source, target)
    selected: dict[str, Tensor] = {}
    for key, value in source.items():
        name = add + key[len(strip) :] if key.startswith(strip) else None
        if name is None or name not in target:
            report.unused.append(key)
        elif target[name].shape != value.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(target[name].shape)))
        else:
            selected[name] = value
    bad = non_finite(selected)
    if bad:
        raise UserError(
            f"weights {source_name} hold NaN or infinite values ({len(bad)} tensors: {some(bad, 3)}): "
            "use an earlier or an intact file"
        )
    if not selected:
        raise UserError(
            f"weights {source_name} match none of the {len(target)} tensors of {report.net_name} "
            f"(file keys like {some(list(source)[:3])}; net keys like {some(list(target)[:3])}): "
            "are they for another network?"
        )
    net.load_state_dict(selected, strict=False)
    report.loaded = list(selected)
    report.missing = [k for k in target if k not in selected]
    return report


def init_from_checkpoint(net: ClassifierNet, path: str) -> LoadReport:
    """Load a checkpoint's net into ``net`` except its head (transfer from your own run, even one
    with another number of classes); the head keeps its fresh initialisation."""
    state = unwrap_state_dict(safe_load(path, "checkpoint"), path)
    body = {k: v for k, v in state.items() if not net.in_head(k.removeprefix("net."))}
    report = load_state_dict_matching(net, body, f"checkpoint {path!r}")
    rank_zero_info(report.summary() + f"\n  head {net.head_name} left new ({len(state) - len(body)} tensors not taken)")
    return report
