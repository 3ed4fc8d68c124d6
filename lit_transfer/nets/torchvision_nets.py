"""Torchvision classification models with the ``ClassifierNet`` interface.

The torchvision model is kept whole under ``model`` (its own forward, its own parameter names after
the ``model.`` prefix), so any model ``torchvision.models.get_model`` builds works, and weights from
torchvision or from a file saved from a torchvision model load by name (see ``lit_transfer.finetune.weights``).
"""

from __future__ import annotations

from typing import Any, Literal

import torchvision
from torch import Tensor, nn
from torchvision.models import get_model_weights

from lit_transfer.errors import UserError
from lit_transfer.nets.base import AuxiliaryLogits, ClassifierNet
from lit_transfer.nets.pooling import use_deterministic_pooling

# replace: the last Linear becomes Linear(in_features, num_classes).
# append: the original (ImageNet 1000-way) output is kept and Linear(1000, num_classes) maps it to
#         the classes, as in the hymenoptera tutorial; it outputs logits like every net here.
HeadMode = Literal["replace", "append"]

# The auxiliary classifiers of the Inception family: their modules, and the weight of each one's loss
# beside the main loss (GoogLeNet's paper: 0.3 for each of its two; Inception v3: 0.4, as TF-slim's
# and timm's training scripts weigh it). torchvision's forward returns them in training mode only.
AUX_LOSS_WEIGHTS = {"googlenet": {"aux1": 0.3, "aux2": 0.3}, "inception_v3": {"AuxLogits": 0.4}}
# Inception v3's auxiliary classifier needs the 17x17 map its 299 px input makes (a 5x5 pooling and a
# 5x5 convolution on it), where the net alone takes 75 px.
AUX_MIN_IMAGE_SIZE = {"inception_v3": 299}


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
        aux_logits: GoogLeNet's and Inception v3's auxiliary classifiers: ``true`` trains them beside
            the main one (adapted to ``num_classes``), their losses added at 0.3 each (GoogLeNet) or 0.4
            (Inception v3); ``false`` builds the nets without them, as torchvision evaluates its
            pretrained ones. Validation, predict and export use the main classifier alone either way.

    SqueezeNet's classifier is a 1x1 convolution followed by pooling: the head is that convolution with
    the ReLU, pooling and flattening after it (``model.classifier.1``), so ``forward_head`` gives logits.
    The smallest input a model takes (torchvision's ``min_size``: 75 px for Inception v3, 299 with its
    auxiliary classifier, 63 for AlexNet, 224 for ViT) is checked in ``forward``, where smaller images
    are a one-line user error.
    """

    def __init__(
        self,
        num_classes: int,
        name: str = "alexnet",
        head: HeadMode = "replace",
        model_kwargs: dict[str, Any] | None = None,
        aux_logits: bool = False,
    ) -> None:
        super().__init__()
        known = torchvision.models.list_models(module=torchvision.models)
        if name not in known:
            raise UserError(f"unknown torchvision classification model {name!r}: use one of {', '.join(known)}")
        if head not in ("replace", "append"):
            raise UserError(f"unknown head mode {head!r}: use replace or append")
        kwargs = dict(model_kwargs or {})
        if name in AUX_LOSS_WEIGHTS:
            kwargs.setdefault("aux_logits", aux_logits)
            kwargs.setdefault("init_weights", True)  # the papers' initialisation; torchvision warns when unset
        elif aux_logits:
            raise UserError(
                f"aux_logits is for {' and '.join(AUX_LOSS_WEIGHTS)}, which have auxiliary classifiers; {name} has none"
            )
        self.weights_family = name
        self.head_mode = head
        self.model = torchvision.models.get_model(name, weights=None, **kwargs)
        use_deterministic_pooling(self.model)  # AlexNet's and VGG's pools, for --trainer.deterministic on a GPU
        aux_heads = {m: w for m, w in AUX_LOSS_WEIGHTS.get(name, {}).items() if getattr(self.model, m, None)}
        self.aux_loss_weights = list(aux_heads.values())
        self.min_image_size = min(get_model_weights(name).DEFAULT.meta.get("min_size", (1, 1)))
        if self.aux_loss_weights:
            self.min_image_size = max(self.min_image_size, AUX_MIN_IMAGE_SIZE.get(name, 1))
        for module in aux_heads:
            aux = self.model.get_submodule(module)
            fc = last_linear(aux)
            aux.set_submodule(fc, nn.Linear(aux.get_submodule(fc).in_features, num_classes))
        if head == "append":
            self.head_name = "head"
            self.head = nn.Linear(num_outputs(self.model), num_classes)
        elif name.startswith("squeezenet"):
            conv = self.model.classifier[1]
            self.model.classifier[1] = nn.Sequential(
                nn.Conv2d(conv.in_channels, num_classes, kernel_size=1), *self.model.classifier[2:], nn.Flatten()
            )
            del self.model.classifier[2:]
            self.head_name = "model.classifier.1"
        else:
            self.head_name = "model." + last_linear(self.model)
            self.reset_classifier(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_train(x).logits

    def forward_train(self, x: Tensor) -> AuxiliaryLogits:
        side = min(x.shape[-2:])
        if side < self.min_image_size:
            raise UserError(
                f"{self.weights_family} takes images of at least {self.min_image_size}x{self.min_image_size} pixels "
                f"and gets {x.shape[-2]}x{x.shape[-1]}: set --data.image_size {self.min_image_size} or more"
            )
        out = self.model(x)
        aux: list[tuple[float, Tensor]] = []
        if isinstance(out, tuple):  # GoogLeNetOutputs / InceptionOutputs: training with aux_logits
            out, *aux_out = out
            aux = list(zip(self.aux_loss_weights, aux_out))
        return AuxiliaryLogits(self.head(out) if self.head_mode == "append" else out, aux)

    def stages(self) -> list[str]:
        """The torchvision model's top-level blocks from stem to classifier, then the head.

        The replaced head lies inside the last block (``model.classifier.6`` inside
        ``model.classifier``); ``stage_of`` gives its parameters to the longer, head name.
        """
        blocks = [
            f"model.{name}" for name, child in self.model.named_children() if any(True for _ in child.parameters())
        ]
        return blocks + ([self.head_name] if self.head_name not in blocks else [])


def num_outputs(model: nn.Module) -> int:
    """The number of outputs of a torchvision classification model (1000 for ImageNet's): its last
    Linear's, or its last convolution's where one classifies (SqueezeNet)."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


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
