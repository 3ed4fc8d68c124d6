"""Reading image files: one loader for every data set, and the file list for ``predict``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from lit_transfer.errors import UserError, first_line

try:
    from torchcodec.decoders import decode_jpeg
except (ImportError, OSError) as err:
    # TorchCodec's wheel is built against one torch build: it does not load with a CPU-only torch (PyTorch's
    # CPU index has a TorchCodec of its own for that), another CUDA version or a torch before 2.11.
    decode_jpeg = None
    JPEG_DECODER = f"Pillow (TorchCodec did not load: {first_line(err)})"
else:
    JPEG_DECODER = "TorchCodec"

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# A JPEG is decoded at a reduced DCT scale only while the resize after it still shrinks the image at
# least this much, as Pillow's Image.thumbnail does (its reducing_gap): the result then stays close
# to a full decode's (benchmarks/input_pipeline.py measures how close).
REDUCING_GAP = 2

# The EXIF tag that says how a photo is to be turned. TorchCodec's decoder always applies it; PIL
# (``load_rgb``) does not, so a JPEG that has one goes through PIL and both give the same pixels.
EXIF_ORIENTATION = 0x0112


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "I;16" or img.mode == "I":
        # 16-bit PNGs: PIL's convert("RGB") clips them, so scale to 8 bits first.
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def load_rgb(path: str | Path | IO[bytes]) -> Image.Image:
    """Open an image as 3-channel RGB, whatever its mode (grayscale, palette, RGBA, CMYK, 16-bit)."""
    with Image.open(path) as img:
        return _as_rgb(img)


def load_image(path: str | Path, min_size: int = 0) -> torch.Tensor:
    """An image file as a ``uint8`` RGB tensor ``(3, H, W)``: the fast loader of the data modules.

    RGB and grayscale JPEGs, nearly every photo, skip PIL: TorchCodec's libjpeg-turbo decoder writes
    the same pixels straight into a tensor (PIL keeps 4 bytes a pixel and copies them out again),
    and the tensor transforms that follow are faster than PIL's too. Where TorchCodec does not load
    (``JPEG_DECODER`` says so), PIL decodes them: the same pixels, about 25 % slower. A JPEG large
    enough (short side at least ``2 * REDUCING_GAP * min_size``; ``min_size`` is the smallest size
    the transform can use without losing detail, the preset's ``decode_size``) is decoded at a
    reduced DCT scale through PIL's ``draft`` instead, keeping a short side >= ``REDUCING_GAP *
    min_size``: 1/4 to 1/64 of the pixels. A JPEG with an EXIF orientation goes through PIL too,
    which leaves it unturned as ``load_rgb`` does. Every other file (PNG, GIF, CMYK JPEG, 16-bit,
    ...) is converted by PIL as in ``load_rgb``, from the same open file (a tiny PNG costs little
    more than opening it twice would).
    """
    with Image.open(path) as img:  # reads the header only
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            keep = min_size * REDUCING_GAP
            if keep and min(img.size) >= 2 * keep:
                img.draft("RGB", (keep, keep))  # the strongest of 1/2, 1/4, 1/8 that keeps >= keep
            elif decode_jpeg is not None and not _has_orientation(img):
                # The file's bytes as a tensor: given a path, TorchCodec reads it under warnings.catch_warnings().
                data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
                try:
                    return decode_jpeg(data, mode="RGB")  # grayscale repeated; HWC memory seen as CHW
                except RuntimeError:  # a stream libjpeg rejects but PIL (what the scan checked) decodes
                    pass
            # tobytes() packs PIL's 4-byte pixels into the tensor's 3; an RGB image needs no convert() copy
            return pil_to_tensor(img if img.mode == "RGB" else img.convert("RGB"))
        return pil_to_tensor(_as_rgb(img))


def _has_orientation(img: Image.Image) -> bool:
    """Whether a JPEG's EXIF says to turn it (any value but 1, "as stored"; unreadable EXIF counts)."""
    if "exif" not in img.info:  # most photos: no EXIF block at all
        return False
    try:
        return img.getexif().get(EXIF_ORIENTATION, 1) != 1
    except Exception:  # noqa: BLE001 - a damaged EXIF block: let PIL decode, as load_rgb would
        return True


def image_loader(transform: Any) -> Callable[[str], Any]:
    """The loader for ``transform``: ``load_image`` (tensors) for the presets, which declare the
    ``decode_size`` they need and take tensors; PIL's ``load_rgb`` for any other transform, which
    may have been written for PIL images."""
    decode_size = getattr(transform, "decode_size", None)
    return load_rgb if decode_size is None else partial(load_image, min_size=decode_size)


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
        self.loader = image_loader(transform)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        return self.transform(self.loader(path)), str(path)
