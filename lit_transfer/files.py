"""Files read safely and written atomically.

- ``safe_load``: checkpoints and weight files hold tensors and plain containers only, never code.
- ``atomic_file``: a file is written under a temporary name in its folder and renamed into place.
- ``staging_folder`` + ``publish``: a folder (a data set) is built next to its place and renamed in.

A rename within one folder is atomic, so what a kill leaves behind is either complete or absent,
and a later run never trusts half a file.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import torch

from lit_transfer.errors import UserError, first_line


def existing_file(path: str | Path, what: str = "file") -> Path:
    """``path`` (``~`` expanded) when it is a non-empty file; otherwise a user error that names what it is."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a folder, not a file: give the file's path")
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist: check the path")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {str(path)!r} is empty (0 bytes): it was not written completely; use another file")
    return path


# torch.save writes a zip archive; files from torch before 1.6 are a pickle stream, which starts with
# the PROTO opcode. Anything else is not a torch file, whatever its name.
_PICKLE_START = b"\x80"


def safe_load(path: str | Path, what: str = "file", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with a user error that names the cause for a
    missing, empty, truncated, damaged, foreign or unsafe (pickled-code) file instead of a traceback.
    A zip-format file's parts are checked against their CRC-32 first: torch.load itself does not, and
    would return damaged tensors silently. ``mmap`` loads the tensors lazily (zip-format files)."""
    path = existing_file(path, what)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as f:
            if f.read(1) != _PICKLE_START:
                raise UserError(f"{what} {str(path)!r} is not a torch file (not what torch.save writes)")
    damaged = damaged_part(path) if is_zip else None
    if damaged:
        raise UserError(f"{what} {str(path)!r} is damaged ({damaged} fails its checksum): use an intact copy")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err) or "Unsupported operand" in str(err):
            raise UserError(f"{what} {str(path)!r} is not a torch file ({first_line(err)})") from err
        raise UserError(
            f"{what} {str(path)!r} holds pickled Python objects, not only tensors, and was refused "
            "(loading it could run code): re-save it as a plain state_dict"
        ) from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        raise UserError(
            f"{what} {str(path)!r} cannot be read ({first_line(err, with_type=True)}): it is truncated or damaged"
        ) from err


def is_complete(path: Path) -> bool:
    """A torch checkpoint is a zip archive whose directory is written last: a truncated file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def newest_complete(paths: Iterable[Path]) -> list[Path]:
    """The complete checkpoint files among ``paths``, the newest first."""
    return [p for p in sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True) if is_complete(p)]


def non_finite(tensors: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [
        name
        for name, value in tensors.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def damaged_part(path: str | Path) -> str | None:
    """The first part of a zip-format torch file whose bytes fail their CRC-32 (or why the archive
    cannot be read), None when every part is intact. Reads the whole file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:  # zlib errors are ValueError-like
        return first_line(err, with_type=True)


_TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through: a temporary file in the same folder, flushed to disk
    and renamed to ``path`` when the block ends without an exception, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file is not
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files that ``atomic_file`` writes were interrupted in (a killed run's),
    for a folder no other process is writing to; return them."""
    stale = [p for p in Path(folder).glob(f".*{_TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        with suppress(FileNotFoundError):
            path.unlink()
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    with suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def staging_folder(dest: str | Path, label: str = "") -> Iterator[Path]:
    """A new, empty temporary folder next to ``dest`` (same file system, so ``publish`` is a rename),
    removed with whatever is left in it when the block ends, whether or not it succeeded."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-{label}", dir=dest.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(folder: Path, dest: str | Path) -> None:
    """Rename ``folder`` (inside a ``staging_folder``) to ``dest``. When ``dest`` appeared meanwhile,
    another process finished the same work first and its result stands."""
    try:
        os.rename(folder, dest)
    except OSError:
        if not Path(dest).is_dir():
            raise


def claim_numbered_folder(parent: str | Path, prefix: str) -> int:
    """Create ``parent/<prefix><n>`` for the smallest ``n`` above every existing one and return ``n``.

    ``mkdir`` either creates a folder or fails because it exists, in one step, so runs started together
    each get their own folder (a listing followed by a create would give two of them the same one).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[len(prefix) :]) for p in parent.glob(prefix + "*") if p.name[len(prefix) :].isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (parent / f"{prefix}{n}").mkdir()
            return n
        except FileExistsError:
            n += 1


def _stamped_names(stem: str, suffix: str) -> Iterator[str]:
    """``<stem>-<date>-<time><suffix>``, then the same with ``-1``, ``-2``, ... for names already taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    yield f"{stem}-{stamp}{suffix}"
    yield from (f"{stem}-{stamp}-{n}{suffix}" for n in itertools.count(1))


def new_file(folder: Path, stem: str, suffix: str) -> Path:
    """A path in ``folder`` that does not exist yet (runs never overwrite each other's files)."""
    return next(folder / name for name in _stamped_names(stem, suffix) if not (folder / name).exists())


def claim_stamped_folder(parent: str | Path, stem: str) -> str:
    """Create ``parent/<stem>-<date>-<time>`` (with a number after it when that is taken, ``mkdir``
    deciding as in ``claim_numbered_folder``) and return its name."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for name in _stamped_names(stem, ""):
        try:
            (parent / name).mkdir()
            return name
        except FileExistsError:
            continue
    raise AssertionError("unreachable: the names never run out")
