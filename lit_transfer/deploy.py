"""Predict with an exported ONNX file using only onnxruntime, numpy and Pillow: no torch, no Lightning.

For a service or a batch job on a machine without the training stack (``pip install onnxruntime numpy
pillow``, then copy this one file, or install lit_transfer without its dependencies):

    python -m lit_transfer.deploy lightning_logs/demo/version_0/checkpoints/last.onnx data/shapes/val/circle

    from lit_transfer.deploy import OnnxClassifier
    classifier = OnnxClassifier("last.onnx")
    rows, skipped = classifier.predict(["a.jpg", "b.jpg"])  # rows: (path, class_name, probability)

The file (``python -m lit_transfer export``) says in its metadata how images are prepared: the short
side resized to ``resize_size`` with ``interpolation``, a center crop of ``image_size``, RGB ``uint8``;
the normalisation is inside the graph. Pillow's antialiased resize and torchvision's differ by at most a
level or so here and there, so probabilities agree with ``predict`` from the checkpoint to about 1e-3.
``python -m lit_transfer predict --ckpt_path <file>.onnx --data.predict_root <images>`` runs this too.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

METADATA_KEY = "lit_transfer"  # as lit_transfer.export.formats writes it
# lit_transfer.data.images.IMG_EXTENSIONS (which imports torch); tests/test_deploy.py keeps them equal.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class DeployError(Exception):
    """A mistake in what was asked (a missing file, a file that is not an export): one line for the user."""


class OnnxClassifier:
    """An exported ONNX classifier and its metadata, on onnxruntime's CPU provider."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise DeployError(f"no ONNX file at {str(path)!r}")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        except KeyError:
            raise DeployError(
                f"{str(path)!r} has no lit_transfer metadata: export it with python -m lit_transfer export"
            ) from None
        except Exception as err:  # onnxruntime's errors have no common public base class
            raise DeployError(f"{str(path)!r} is not a readable ONNX file ({str(err).splitlines()[0]})") from err
        self.input_name = self.session.get_inputs()[0].name

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def prepare(self, image: Image.Image) -> np.ndarray:
        """An image as the net takes it: ``uint8`` ``(3, image_size, image_size)``."""
        image = ImageOps.exif_transpose(image).convert("RGB")
        resize, crop = self.meta["resize_size"], self.meta["image_size"]
        # The short side becomes resize, the long one in proportion, rounded down (torchvision's Resize).
        width, height = image.size
        if width <= height:
            size = (resize, int(resize * height / width))
        else:
            size = (int(resize * width / height), resize)
        image = image.resize(size, _RESAMPLE[self.meta["interpolation"]])
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        return np.asarray(image.crop((left, top, left + crop, top + crop))).transpose(2, 0, 1)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(
        self, files: Iterable[str | Path], batch_size: int = 32
    ) -> tuple[list[tuple[str, str, float]], list[tuple[str, str]]]:
        """``(path, class_name, probability)`` for every readable image, and ``(path, reason)`` for the others."""
        rows, skipped, pending = [], [], []
        for path in [*files, None]:
            if path is not None:
                try:
                    with Image.open(path) as image:
                        pending.append((str(path), self.prepare(image)))
                except (OSError, ValueError, Image.DecompressionBombError) as err:
                    skipped.append((str(path), f"{type(err).__name__}: {err}"))
            if pending and (path is None or len(pending) == batch_size):
                probabilities = self.probabilities(np.stack([array for _, array in pending]))
                for (name, _), p in zip(pending, probabilities):
                    rows.append((name, self.class_names[int(p.argmax())], float(p.max())))
                pending = []
        return rows, skipped


def list_images(root: str | Path) -> list[Path]:
    """A file, or every image file below a folder, sorted: ``lit_transfer.data.images.list_images``, which
    imports torch, restated here."""
    root = Path(root).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DeployError(f"no image file or folder at {str(root)!r}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise DeployError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {str(root)!r}")
    return files


def new_csv(folder: Path) -> Path:
    """``predictions-<date>-<time>.csv`` in ``folder``, created empty and never one that exists
    (``lit_transfer.files.new_file``'s names, restated here because that module imports torch)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = folder / f"predictions-{stamp}{'' if n == 0 else f'-{n}'}.csv"
        try:
            path.open("x").close()
            return path
        except FileExistsError:
            continue
    raise DeployError(f"no free predictions file name in {str(folder)!r}")


def write_csv(rows: list[tuple[str, str, float]], path: Path) -> None:
    """The same columns as ``predict`` from a checkpoint: ``path,class_name,probability``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class_name", "probability"])
        writer.writerows((name, class_name, f"{p:.6f}") for name, class_name, p in rows)


def run(model: str, images: str, output: str | None = None, batch_size: int = 32) -> Path:
    """Predict ``images`` with the ONNX file ``model``; the CSV goes to ``output`` or next to ``model``."""
    if batch_size < 1:
        raise DeployError(f"batch size {batch_size}: give at least 1")
    classifier = OnnxClassifier(model)
    rows, skipped = classifier.predict(list_images(images), batch_size)
    if not rows:
        raise DeployError(
            f"none of the image files under {images!r} can be read (first: {skipped[0][0]}, {skipped[0][1]})"
        )
    path = Path(output) if output else new_csv(Path(model).resolve().parent)
    write_csv(rows, path)
    for name, class_name, p in rows[:50]:
        print(f"{name}  {class_name}  {p:.4f}")
    if len(rows) > 50:
        print(f"... {len(rows) - 50} more rows in the CSV file")
    print(f"wrote {len(rows)} predictions to {path}")
    if skipped:
        listing = path.with_name(path.stem + "-skipped.txt")
        listing.write_text("".join(f"{name}\t{reason}\n" for name, reason in skipped))
        print(f"left out {len(skipped)} unreadable image files, listed in {listing}")
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m lit_transfer.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the ONNX file python -m lit_transfer export wrote")
    parser.add_argument("images", help="an image file or a folder of images (searched recursively)")
    parser.add_argument(
        "--csv", help="the CSV file to write (default: predictions-<date>-<time>.csv next to the model)"
    )
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        return run(args.model, args.images, args.csv, args.batch_size)
    except DeployError as err:
        sys.stderr.write(f"lit_transfer.deploy: error: {err}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
