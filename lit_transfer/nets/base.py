"""The small interface every net in lit_transfer offers, after timm's models.

Freezing, learning-rate groups and head replacement only talk to this interface, so AlexNet,
ResNet50 and any other net go through one code path.
"""

from __future__ import annotations

from torch import nn


class ClassifierNet(nn.Module):
    """An ``nn.Module`` that knows where its classifier is and how its stages are ordered.

    Subclasses set ``head_name`` (the dotted name of the classification layer) and may override
    ``stages()``.
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
