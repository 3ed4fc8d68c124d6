"""What TensorBoard shows beyond scalars: a confusion matrix and a prediction grid every validation
epoch, per-class accuracy at test time.

torchmetrics counts the confusion matrix; its own ``plot()`` needs matplotlib, which this project
does not depend on, so the two pictures are drawn here with Pillow.
"""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image, ImageDraw
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchvision.transforms.v2 import functional as F
from torchvision.utils import make_grid


def confusion_matrix_image(matrix: Tensor, class_names: list[str]) -> Tensor:
    """Rows: true class, columns: predicted; shade by the share of the row, counts written in."""
    n = len(class_names)
    cell = max(10, min(48, 640 // n))
    label_w = min(140, 7 * max(len(c) for c in class_names) + 8)
    img = Image.new("RGB", (label_w + n * cell + 1, label_w // 2 + n * cell + 1), "white")
    draw = ImageDraw.Draw(img)
    shares = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    top = label_w // 2
    for i in range(n):
        draw.text((2, top + i * cell + cell // 2 - 5), class_names[i][: label_w // 7], fill="black")
        for j in range(n):
            shade = int(255 * (1 - shares[i, j].item()))
            box = (label_w + j * cell, top + i * cell, label_w + (j + 1) * cell, top + (i + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255), outline="gray")
            if cell >= 24:
                draw.text(
                    (box[0] + 3, box[1] + cell // 2 - 5),
                    str(int(matrix[i, j])),
                    fill="black" if shade > 128 else "white",
                )
    draw.text((label_w, 2), "predicted ->   (rows: true class)", fill="black")
    return F.pil_to_tensor(img)


def prediction_grid(images: Tensor, preds: Tensor, targets: Tensor, class_names: list[str], size: int = 96) -> Tensor:
    """Each image rescaled to 0..1 for viewing (whatever its normalisation), captioned
    ``pred / true``: green when right, red when wrong."""
    tiles = []
    for image, p, t in zip(images, preds.tolist(), targets.tolist()):
        image = image.float()
        image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
        tile = F.to_pil_image(F.resize(image, [size, size], antialias=True))
        canvas = Image.new("RGB", (size, size + 14), "white")
        canvas.paste(tile, (0, 0))
        ImageDraw.Draw(canvas).text(
            (2, size + 1), f"{class_names[p][:7]}/{class_names[t][:7]}", fill=(0, 140, 0) if p == t else (200, 0, 0)
        )
        tiles.append(F.pil_to_tensor(canvas))
    return make_grid(tiles, nrow=min(8, len(tiles)), padding=2, pad_value=255)


class ValidationReport(Callback):
    """Logs ``val/confusion_matrix`` and ``val/predictions`` images each validation epoch and
    ``test/acc_<class>`` at test time. Needs ``validation_step``/``test_step`` to return the logits."""

    def __init__(self, num_images: int = 16) -> None:
        self.num_images = num_images

    # -- validation ---------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.confusion = MulticlassConfusionMatrix(pl_module.num_classes, validate_args=False).to(pl_module.device)
        self.samples = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        x, y = batch
        preds = outputs["logits"].argmax(dim=-1)
        self.confusion.update(preds, y)
        if self.samples is None:
            k = self.num_images
            self.samples = (x[:k].detach().cpu(), preds[:k].cpu(), y[:k].cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        matrix = self.confusion.compute().cpu()  # synchronised across processes under DDP
        if trainer.sanity_checking or not trainer.is_global_zero or self.samples is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer, step = logger.experiment, trainer.global_step
                writer.add_image("val/confusion_matrix", confusion_matrix_image(matrix, pl_module.class_names), step)
                if self.samples[0].dim() == 4:  # images, not the cached features of feature_cache
                    writer.add_image("val/predictions", prediction_grid(*self.samples, pl_module.class_names), step)

    # -- test ---------------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.per_class = MulticlassAccuracy(pl_module.num_classes, average=None, validate_args=False).to(
            pl_module.device
        )

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.per_class.update(outputs["logits"], batch[1])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        for name, acc in zip(pl_module.class_names, self.per_class.compute().tolist()):
            pl_module.log(f"test/acc_{name}", acc, sync_dist=False)
