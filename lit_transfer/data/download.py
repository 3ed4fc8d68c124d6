"""Downloading a data set archive with its checksum, through torchvision's download utilities."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from lit_transfer.errors import UserError, first_line
from lit_transfer.files import publish, staging_folder


@dataclass(frozen=True)
class Archive:
    """A zip or tar archive that unpacks to one class-per-folder data set (or to a folder holding it)."""

    url: str
    md5: str | None = None
    sha256: str | None = None


# Known archives, by the name of the folder they unpack to (the last part of --data.root).
KNOWN_ARCHIVES: dict[str, Archive] = {
    # The PyTorch transfer-learning tutorial's ants vs bees (train/ and val/, 46 MB). The tutorial
    # repositories publish no checksum (they run a plain wget); this SHA-256 and the size of
    # 47,286,322 bytes come from the one public project found that pins them (a Racket torch
    # binding, datasets/hymenoptera.rkt); they could not be re-checked offline here.
    "hymenoptera_data": Archive(
        url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        sha256="fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209",
    ),
}


def archive_for(
    root: Path, url: str | None, md5: str | None, sha256: str | None = None, unverified: bool = False
) -> Archive:
    """The archive to download for ``root``: the one given by ``url`` (with its checksum, unless the
    user says ``unverified``) or the known one of its name."""
    if url:
        if not (md5 or sha256 or unverified):
            raise UserError(
                f"--data.archive_url {url} needs its checksum to be verified: give --data.archive_sha256 <hex> "
                "(or --data.archive_md5), or --data.archive_unverified true to use the download unchecked"
            )
        return Archive(url=url, md5=md5, sha256=sha256)
    if root.name in KNOWN_ARCHIVES:
        return KNOWN_ARCHIVES[root.name]
    raise UserError(
        f"data folder {str(root)!r} does not exist and no archive is known for {root.name!r}: give "
        f"--data.archive_url (and --data.archive_sha256), or use a root ending in one of {sorted(KNOWN_ARCHIVES)}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _data_folder(unpacked: Path) -> Path:
    """The folder inside an unpacked archive that holds the data set: an archive usually wraps it in
    one top folder (``hymenoptera_data/``); macOS adds a ``__MACOSX`` folder of resource forks."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "val", "test"):
        return entries[0]
    return unpacked


def download_and_unpack(archive: Archive, root: str | Path) -> Path:
    """Download ``archive``, check its checksum and unpack it so that its data set is ``root``.

    Everything happens in a temporary folder next to ``root`` that is renamed into place at the end,
    so a failed or interrupted download leaves nothing behind that a later run would trust.
    """
    root = Path(root).expanduser()
    filename = os.path.basename(urlparse(archive.url).path) or "archive.zip"
    with staging_folder(root, "download-") as tmp:
        try:
            download_url(archive.url, str(tmp), filename=filename)
        except (OSError, HTTPException, ValueError) as err:
            reason = first_line(err)
            raise UserError(
                f"cannot download {archive.url} ({reason}): check the network, or download and unpack it "
                f"yourself so that {str(root)!r} holds its train/ and val/ (or class) folders"
            ) from err
        path = tmp / filename
        if archive.md5 and not check_integrity(str(path), archive.md5):
            raise UserError(
                f"{archive.url} does not match its MD5 checksum {archive.md5}: the download is corrupt, retry"
            )
        if archive.sha256 and _sha256(path) != archive.sha256:
            raise UserError(
                f"{archive.url} does not match its SHA-256 checksum {archive.sha256}: the download is corrupt, retry"
            )
        unpacked = tmp / "unpacked"
        try:
            extract_archive(str(path), str(unpacked))
        except Exception as err:  # zipfile/tarfile raise several types for a file that is no archive
            raise UserError(f"cannot unpack {archive.url} ({type(err).__name__}: {err})") from err
        publish(_data_folder(unpacked), root)
    return root
