"""timm's models with the ``ClassifierNet`` interface (the optional ``timm`` extra).

The timm model is kept whole under ``model``, as ``TorchvisionNet`` keeps torchvision's, so a state dict
saved from the same timm model (timm's own weights file, or ``model.state_dict()``) loads by name
through ``--model.weights <file>``; its input (size, crop share, interpolation, mean, std) comes from
the model's pretrained config, as timm's ``resolve_data_config`` reads it.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from lit_transfer.errors import UserError, first_line
from lit_transfer.nets.base import ClassifierNet
from lit_transfer.preprocessing import INTERPOLATIONS, Preprocessing


class TimmNet(ClassifierNet):
    """A ``timm.create_model(name)`` classifier for ``num_classes``.

    Args:
        num_classes: number of outputs (given by the model, from the data).
        name: a timm model name, as ``timm.list_models()`` gives them, e.g. ``resnet50``,
            ``convnext_tiny``, ``efficientnet_b0``, ``vit_small_patch16_224``.
        pretrained: let timm download the model's pretrained weights by name (needs the internet or
            timm's cache); offline, pass a weights file with ``--model.weights`` instead.
        model_kwargs: further keyword arguments of ``timm.create_model``, e.g. ``{drop_rate: 0.2}``.
    """

    def __init__(
        self,
        num_classes: int,
        name: str = "resnet18",
        pretrained: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise UserError(
                "TimmNet needs timm: pip install 'lit-transfer[timm]' (in a clone: pip install -e '.[timm]')"
            ) from None
        if not timm.is_model(name):
            close = timm.list_models(f"*{name}*")[:8]
            raise UserError(
                f"unknown timm model {name!r}: use a name timm.list_models() gives ({', '.join(close) or 'e.g. resnet50'})"
            )
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **(model_kwargs or {}))
        except (OSError, RuntimeError, ValueError) as err:  # no connection, no cached file, a refused download
            raise UserError(
                f"cannot get timm's pretrained weights for {name!r} ({first_line(err)}): pass a file with "
                "--model.weights /path/to/weights, and pretrained: false"
            ) from err
        cfg = self.model.pretrained_cfg
        classifier = cfg.get("classifier")
        self.head_name = "model." + (classifier[0] if isinstance(classifier, (list, tuple)) else classifier)
        size = cfg.get("input_size", (3, 224, 224))[-1]
        interpolation = cfg.get("interpolation", "bilinear")
        self.preprocessing = Preprocessing(
            image_size=size,
            resize_size=math.floor(size / cfg.get("crop_pct", 0.875)),  # timm's eval resize for its crop
            interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
            mean=cfg.get("mean"),
            std=cfg.get("std"),
            source=f"timm's {name}",
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def stages(self) -> list[str]:
        """The timm model's top-level modules that hold parameters, stem to head."""
        return [f"model.{name}" for name, child in self.model.named_children() if any(True for _ in child.parameters())]
