"""The small interface every net in lit_transfer offers, after timm's models.

Freezing, learning-rate groups and head replacement only talk to this interface, so AlexNet,
ResNet50 and any other net go through one code path.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from lit_transfer.errors import UserError
from lit_transfer.preprocessing import Preprocessing

# What a config writes for the net's classifier, whatever the net calls it.
HEAD_ALIAS = "head"


def layer_stages(net: nn.Module) -> list[str]:
    """One stage per convolution or fully connected layer, stem to head: for small nets whose layers a
    user picks one by one (freeze "everything before the head", per-layer learning rates)."""
    return [name for name, module in net.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


class AuxiliaryLogits(NamedTuple):
    """What a net gives for a training batch: its logits, and ``(loss weight, logits)`` of each auxiliary
    classifier whose loss joins the main one (GoogLeNet's, Inception v3's)."""

    logits: Tensor
    aux: list[tuple[float, Tensor]]


class ClassifierNet(nn.Module):
    """An ``nn.Module`` that knows where its classifier is, how its stages are ordered and which
    pretrained weights it takes: the one door through which the rest of lit_transfer asks about a net.

    Subclasses set ``head_name`` (the dotted name of the classification layer), may set
    ``weights_family`` and ``preprocessing`` and may override ``stages()``. The head is the last operation of ``forward``,
    so the net splits into ``forward_features`` (everything before the head) and ``forward_head``; a
    net where something follows the head overrides both.
    """

    #: Dotted name of the classification layer (timm's ``pretrained_cfg["classifier"]``).
    head_name: str = "head"
    #: The torchvision model whose weights enum gives names such as ``DEFAULT`` or ``IMAGENET1K_V1``
    #: their meaning for this net (``alexnet``, ``resnet50``); None: it takes weight files only.
    weights_family: str | None = None
    #: The input the net expects (resize, crop, interpolation, mean, std; ``lit_transfer.preprocessing``),
    #: e.g. the normalisation its weights were trained with; the data module takes what its config
    #: leaves unset. None: the net says nothing (torchvision nets: their weights say it instead).
    preprocessing: Preprocessing | None = None

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification layer by a freshly initialised ``Linear(in_features, num_classes)``."""
        old = self.get_classifier()
        if not isinstance(old, nn.Linear):
            raise TypeError(f"{type(self).__name__}.{self.head_name} is {type(old).__name__}, not nn.Linear")
        self.set_submodule(self.head_name, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))

    def in_head(self, name: str) -> bool:
        """Whether a parameter, buffer or module name (relative to the net) belongs to the head."""
        return name == self.head_name or name.startswith(self.head_name + ".")

    def find_module(self, name: str) -> str:
        """The full dotted name of the module ``name`` means, for names a user writes in a config.

        ``name`` is a module name of the net (``model.layer4``) or its end (``layer4``; where several
        modules end that way, the one nearest the top is meant: ``conv1`` is ``model.conv1``, not
        ``model.layer1.0.conv1``), or ``head`` for the classifier whatever it is called.
        """
        modules = dict(self.named_modules())
        if name and name in modules:
            return name
        if name == HEAD_ALIAS:
            return self.head_name
        matches = [m for m in modules if m.endswith("." + name)] if name else []
        if matches:
            depth = min(m.count(".") for m in matches)
            nearest = [m for m in matches if m.count(".") == depth]
            if len(nearest) == 1:
                return nearest[0]
            raise UserError(
                f"module name {name!r} is ambiguous in {type(self).__name__} ({', '.join(nearest[:4])}, ...): give more of it"
            )
        raise UserError(
            f"{type(self).__name__} has no module {name!r}: use one of its stages ({', '.join(self.stages())}), "
            f"'{HEAD_ALIAS}', or another module name from print(net)"
        )

    def stages(self) -> list[str]:
        """Module names from stem to head; every parameter belongs to exactly one of them.

        The default is the top-level children in definition order, which is stem to head for a
        plain ``nn.Sequential``-style net.
        """
        return [name for name, child in self.named_children() if any(True for _ in child.parameters())]

    def stage_of(self, parameter_name: str) -> str:
        """The stage that owns a parameter (the longest stage name that prefixes it)."""
        owners = [s for s in self.stages() if parameter_name == s or parameter_name.startswith(s + ".")]
        if not owners:
            raise KeyError(f"parameter {parameter_name!r} belongs to no stage of {type(self).__name__}")
        return max(owners, key=len)

    def forward_train(self, x: Tensor) -> AuxiliaryLogits:
        """The logits of a training batch with the auxiliary classifiers' (none here); ``forward`` gives
        the logits alone, as validation, predict and export use them."""
        return AuxiliaryLogits(self(x), [])

    def forward_features(self, x: Tensor) -> Tensor:
        """What the head receives for ``x`` (timm's name): pooled features for a ResNet, the 1000-way
        output for a torchvision net with an appended head.

        A forward pre-hook on the head records its input, so every net gets this from its own
        ``forward`` without a second copy of it (the head also runs; it is one small layer).
        """
        captured: list[Tensor] = []
        handle = self.get_classifier().register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            self(x)
        finally:
            handle.remove()
        return captured[-1]

    def forward_head(self, features: Tensor) -> Tensor:
        """The logits for ``forward_features``' output: ``forward_head(forward_features(x)) == forward(x)``."""
        return self.get_classifier()(features)
