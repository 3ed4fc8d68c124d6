"""Finding unreadable image files before training, so a bad file never stops an epoch half way."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from lit_transfer.data.images import is_image_file
from lit_transfer.errors import first_line

# JPEGs are decoded at about this size through libjpeg's DCT scaling ("draft" mode): a truncated or
# corrupt stream still fails, at a fraction of the cost of a full decode.
_DRAFT_SIZE = (64, 64)


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be decoded as an image (the error's first line), or None when it can."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            img.draft("RGB", _DRAFT_SIZE)  # a no-op for formats other than JPEG
            img.load()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return first_line(err, with_type=True) if str(err).strip() else type(err).__name__
    return None


def find_bad_images(files: Iterable[str | Path], workers: int | None = None) -> list[tuple[str, str]]:
    """``(path, reason)`` for each file that cannot be decoded, in the order given.

    Threads suffice: PIL releases the GIL while it decodes.
    """
    files = [str(f) for f in files]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(image_problem, files, chunksize=32))
    return [(path, reason) for path, reason in zip(files, problems) if reason is not None]


def list_image_files(folder: str | Path) -> list[str]:
    """Every image file below ``folder``, with the paths ``torchvision.datasets.ImageFolder`` uses
    (``os.walk`` following links, joined with ``os.path.join``), so the two can be compared."""
    found = []
    for dirpath, _, filenames in sorted(os.walk(str(folder), followlinks=True)):
        found += [os.path.join(dirpath, name) for name in sorted(filenames) if is_image_file(name)]
    return found
