"""Reading image files: one loader for every data set, and the file list for ``predict``."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from lit_transfer.errors import UserError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as 3-channel RGB, whatever its mode (grayscale, palette, RGBA, CMYK, 16-bit)."""
    with Image.open(path) as img:
        if img.mode == "I;16" or img.mode == "I":
            # 16-bit PNGs: PIL's convert("RGB") clips them, so scale to 8 bits first.
            img = img.point(lambda v: v / 256).convert("L")
        return img.convert("RGB")


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMG_EXTENSIONS)


def list_images(root: str | Path) -> list[Path]:
    """A file, or every image file below a folder, sorted so predictions come out in a stable order."""
    root = Path(root).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError(f"no image file or folder at {str(root)!r}: check --data.predict_root")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {str(root)!r}")
    return files


class ImageFiles(Dataset):
    """Unlabelled images for ``predict``: yields ``(image, path)``."""

    def __init__(self, files: list[Path], transform) -> None:
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        return self.transform(load_rgb(path)), str(path)
