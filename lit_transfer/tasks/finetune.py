"""Fine-tuning a pretrained net: the shared classifier plus pretrained ``weights`` and a ``finetune`` mode."""

from __future__ import annotations

from typing import Any

from lit_transfer.finetuning import FinetuneMode, finetuning_callbacks
from lit_transfer.tasks.classifier import ImageClassifier, NetFactory
from lit_transfer.weights import LoadReport, is_weights_path, load_pretrained, torchvision_weights


class FineTuneClassifier(ImageClassifier):
    """``ImageClassifier`` whose net starts from pretrained ``weights``.

    Args:
        weights: ``DEFAULT``, ``IMAGENET1K_V1``, any torchvision weights name such as
            ``AlexNet_Weights.IMAGENET1K_V1``, a path to a ``.pth`` file, or null (random init);
            see ``lit_transfer.weights``.
        finetune: ``full`` trains every parameter; ``feature_extractor`` trains only the net's head
            and keeps the rest, BatchNorm statistics included, as loaded.

    The weights are loaded when fitting, validating, testing or predicting starts, unless a
    checkpoint is restored (``ImageClassifier.load_initial_weights``): its weights replace them
    anyway, so resuming or predicting from a checkpoint neither downloads them nor needs their file.
    """

    def __init__(
        self,
        net: NetFactory,
        weights: str | None = None,
        finetune: FinetuneMode = "full",
        **kwargs: Any,
    ) -> None:
        super().__init__(net, **kwargs)
        if weights is not None and not is_weights_path(weights):
            torchvision_weights(weights, self.net)  # an unknown name fails now, not after data loading
        self.weights = weights
        self.finetune = finetune
        self.weights_report: LoadReport | None = None

    def load_initial_weights(self) -> None:
        """The pretrained ``weights`` first, then whatever the base class adds (``init_from``, the
        backbone of an earlier run, is the more specific start). The base class calls this once,
        when a run starts without restoring a checkpoint."""
        self.weights_report = load_pretrained(self.net, self.weights)
        super().load_initial_weights()

    def configure_callbacks(self):
        return finetuning_callbacks(self.finetune)
