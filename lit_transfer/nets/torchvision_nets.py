"""Torchvision classification models with the ``ClassifierNet`` interface.

The torchvision model is kept whole under ``model`` (its own forward, its own parameter names after
the ``model.`` prefix), so any model ``torchvision.models.get_model`` builds works, and weights from
torchvision or from a file saved from a torchvision model load by name (see ``lit_transfer.finetune.weights``).
"""

from __future__ import annotations

from typing import Any, Literal

import torchvision
from torch import Tensor, nn

from lit_transfer.errors import UserError
from lit_transfer.nets.base import ClassifierNet

# replace: the last Linear becomes Linear(in_features, num_classes).
# append: the original (ImageNet 1000-way) output is kept and Linear(1000, num_classes) maps it to
#         the classes, as in the hymenoptera tutorial; it outputs logits like every net here.
HeadMode = Literal["replace", "append"]


def last_linear(model: nn.Module) -> str:
    """The name of the last ``nn.Linear`` registered in ``model``: the classifier of every torchvision
    classification model that has one (AlexNet ``classifier.6``, ResNet ``fc``, ViT ``heads.head``)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier to adapt: pick another model")
    return names[-1]


class TorchvisionNet(ClassifierNet):
    """``torchvision.models.get_model(name)`` with its classifier adapted to ``num_classes``.

    The net is built with random weights; pretrained ones are loaded afterwards by the model's
    ``weights`` argument (``lit_transfer.finetune.weights``), which matches tensors by name and shape: with
    ``head="replace"`` the new head is left out of a 1000-way ImageNet file, with ``head="append"``
    the 1000-way layer is loaded and only the appended layer stays new.

    Args:
        num_classes: number of outputs (given by the model, from the data).
        name: torchvision classification model, as ``torchvision.models.list_models()`` names it,
            e.g. ``alexnet``, ``resnet50``, ``vit_b_16``.
        head: ``replace``: the model's last Linear becomes ``Linear(in_features, num_classes)``;
            ``append``: its own (ImageNet: 1000-way) output is kept and a Linear from it to
            ``num_classes`` added after it.
        model_kwargs: further keyword arguments of the torchvision model's builder, e.g.
            ``{dropout: 0.2}``; null: none.
    """

    def __init__(
        self,
        num_classes: int,
        name: str = "alexnet",
        head: HeadMode = "replace",
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        known = torchvision.models.list_models(module=torchvision.models)
        if name not in known:
            raise UserError(f"unknown torchvision classification model {name!r}: use one of {', '.join(known)}")
        self.weights_family = name
        self.head_mode = head
        self.model = torchvision.models.get_model(name, weights=None, **(model_kwargs or {}))
        original_head = "model." + last_linear(self.model)
        if head == "replace":
            self.head_name = original_head
            self.reset_classifier(num_classes)
        elif head == "append":
            self.head_name = "head"
            self.head = nn.Linear(self.get_submodule(original_head).out_features, num_classes)
        else:
            raise UserError(f"unknown head mode {head!r}: use replace or append")

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return self.head(out) if self.head_mode == "append" else out

    def stages(self) -> list[str]:
        """The torchvision model's top-level blocks from stem to classifier, then the head.

        The replaced head lies inside the last block (``model.classifier.6`` inside
        ``model.classifier``); ``stage_of`` gives its parameters to the longer, head name.
        """
        blocks = [
            f"model.{name}" for name, child in self.model.named_children() if any(True for _ in child.parameters())
        ]
        return blocks + ([self.head_name] if self.head_name not in blocks else [])


class AlexNet(TorchvisionNet):
    """Torchvision AlexNet (224 px ImageNet layout; inputs from about 63 px up work through its
    adaptive average pool) with its ``classifier.6`` replaced or a ``Linear(1000, n)`` appended.

    Args:
        num_classes: number of outputs (given by the model, from the data).
        head: ``replace``: ``classifier.6`` becomes ``Linear(4096, num_classes)``; ``append``: the
            1000-way output is kept and ``Linear(1000, num_classes)`` added after it.
        dropout: dropout probability before each of the classifier's first two Linear layers, 0.0 to 1.0.
    """

    def __init__(self, num_classes: int, head: HeadMode = "replace", dropout: float = 0.5) -> None:
        super().__init__(num_classes, name="alexnet", head=head, model_kwargs={"dropout": dropout})
