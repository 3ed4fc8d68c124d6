"""The small interface every net in lit_transfer offers, after timm's models.

Freezing, learning-rate groups and head replacement only talk to this interface, so AlexNet,
ResNet50 and any other net go through one code path.
"""

from __future__ import annotations

from torch import Tensor, nn


class ClassifierNet(nn.Module):
    """An ``nn.Module`` that knows where its classifier is and how its stages are ordered.

    Subclasses set ``head_name`` (the dotted name of the classification layer) and may override
    ``stages()``. The head is the last operation of ``forward``, so the net splits into
    ``forward_features`` (everything before the head) and ``forward_head``; a net where something
    follows the head overrides both.
    """

    head_name: str = "head"

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification layer by a freshly initialised ``Linear(in_features, num_classes)``."""
        old = self.get_classifier()
        if not isinstance(old, nn.Linear):
            raise TypeError(f"{type(self).__name__}.{self.head_name} is {type(old).__name__}, not nn.Linear")
        self.set_submodule(self.head_name, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))

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
