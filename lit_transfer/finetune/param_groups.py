"""Learning-rate groups from YAML: each group names modules of the net and has its own optimizer options.

Under the model (``FineTuneClassifier.param_groups``)::

    param_groups:
      - {name: early, modules: [conv1, bn1, layer1, layer2, layer3], lr: 1.0e-5, momentum: 0.1}
      - {name: layer4, modules: [layer4], lr: 1.0e-4}
      - {name: head, modules: [head], lr: 1.0e-3}

- ``name``: the group's name in the optimizer, so its learning rate shows in TensorBoard as
  ``lr-<Optimizer>/<name>`` (``lr-SGD/early``).
- ``modules``: modules of the net (``ClassifierNet.find_module``): a dotted module name (``model.layer4``), its
  end (``layer4``, ``layer4.2``), or ``head`` for the net's classifier whatever it is called.
- every other key (``lr``, ``momentum``, ``weight_decay``, ``betas``, ...) is an option of the group
  and must be one the optimizer has; a key left out takes the optimizer's own value.

A parameter belongs to the group naming its most specific module, so ``{modules: [model]}`` for the
whole torchvision model plus ``{modules: [head]}`` for its classifier is fine; two groups naming the
same module is an error. Trainable parameters that no group names go to a group called ``default``
with the optimizer's own options (so one config fits any net: stages it does not name still train).
Frozen parameters go to no group, and groups with no trainable parameters are left out; a module
unfrozen later joins the optimizer then, with its group's options (``lit_transfer.finetune.freezing.GradualUnfreezing``).

Torch's optimizers accept groups as dicts already; what is written here is only the mapping from the
config's module names to parameters, which neither torch nor Lightning offers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer

from lit_transfer.errors import UserError
from lit_transfer.nets.base import ClassifierNet

DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class GroupSpec:
    """One configured group: its name, the full names of its modules, and its optimizer options."""

    name: str
    modules: tuple[str, ...]
    options: dict[str, Any]


def parse_param_groups(raw: Sequence[dict[str, Any]] | None, net: ClassifierNet) -> list[GroupSpec]:
    """Check the configured groups against ``net`` and resolve their module names."""
    specs: list[GroupSpec] = []
    owner: dict[str, str] = {}  # module -> the group that names it
    for i, group in enumerate(raw or []):
        where = f"param_groups[{i}]"
        if not isinstance(group, dict):
            raise UserError(
                f"{where} is {group!r}: expected a mapping such as {{name: head, modules: [head], lr: 1.0e-3}}"
            )
        options = dict(group)
        name, modules = options.pop("name", None), options.pop("modules", None)
        if not isinstance(name, str) or not name:
            raise UserError(f"{where} has no name: name every group (the name labels its learning rate in TensorBoard)")
        where = f"param group {name!r}"
        if name == DEFAULT_GROUP or name in {s.name for s in specs}:
            raise UserError(
                f"{where}: the name is {'reserved for unnamed parameters' if name == DEFAULT_GROUP else 'used twice'}; pick another"
            )
        if isinstance(modules, str):
            modules = [modules]
        if not modules:
            raise UserError(f"{where} names no modules: list them, e.g. modules: [layer4]")
        if "params" in options:
            raise UserError(f"{where}: give modules, not params")
        lr = options.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))):
            raise UserError(f"{where}: lr must be a number, not {lr!r}")
        resolved = tuple(net.find_module(m) for m in modules)
        for module in resolved:
            if module in owner:
                raise UserError(f"{where} and param group {owner[module]!r} both name module {module!r}: name it once")
            owner[module] = name
        specs.append(GroupSpec(name, resolved, options))
    return specs


def group_of(parameter_name: str, specs: Sequence[GroupSpec]) -> str:
    """The group whose most specific module holds the parameter, else ``default``."""
    best, best_length = DEFAULT_GROUP, -1
    for spec in specs:
        for module in spec.modules:
            if parameter_name.startswith(module + ".") and len(module) > best_length:
                best, best_length = spec.name, len(module)
    return best


def optimizer_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], specs: Sequence[GroupSpec]
) -> list[dict[str, Any]]:
    """The optimizer's param groups for the trainable ones of ``named_parameters`` (names relative to
    the net): one per configured group that has any, in config order, then ``default``."""
    params: dict[str, list[nn.Parameter]] = {spec.name: [] for spec in specs}
    params[DEFAULT_GROUP] = []
    for name, parameter in named_parameters:
        if parameter.requires_grad:
            params[group_of(name, specs)].append(parameter)
    options = {spec.name: spec.options for spec in specs}
    return [{"name": group, "params": ps, **options.get(group, {})} for group, ps in params.items() if ps]


def check_options(optimizer: Optimizer, specs: Sequence[GroupSpec]) -> None:
    """Torch keeps unknown keys of a param group silently; a misspelt option is the user's mistake."""
    for spec in specs:
        unknown = sorted(set(spec.options) - set(optimizer.defaults))
        if unknown:
            raise UserError(
                f"param group {spec.name!r}: {type(optimizer).__name__} has no option {', '.join(unknown)} "
                f"(its options: {', '.join(k for k in optimizer.defaults if not k.startswith('_'))})"
            )


def describe(groups: Sequence[dict[str, Any]], specs: Sequence[GroupSpec] = ()) -> str:
    """One line per optimizer group: name, tensors, options; then the configured groups now empty."""
    lines = []
    for group in groups:
        shown = {k: v for k, v in group.items() if k in ("lr", "momentum", "weight_decay", "betas")}
        options = " ".join(f"{k}={v}" for k, v in shown.items())
        lines.append(f"  {group.get('name', '?')}: {len(group['params'])} tensors {options}".rstrip())
    present = {g.get("name") for g in groups}
    empty = [s.name for s in specs if s.name not in present]
    if empty:
        lines.append(f"  not in the optimizer (no trainable parameters now): {', '.join(empty)}")
    return "optimizer parameter groups:\n" + "\n".join(lines)
