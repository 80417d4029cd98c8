"""Atomic file and folder writes: nothing the user made is ever half-written.

Every export and every autosave goes through here: write into a temporary sibling, fsync, then
``os.replace`` onto the final name (atomic on POSIX within one filesystem).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class OutputExistsError(FileExistsError):
    """Raised when an export would overwrite something and ``overwrite`` was not asked for."""


def _fsync_dir(path: Path) -> None:
    # Persist the rename itself; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool = False) -> None:
    """Give a temporary file/folder the permissions a normal open() would have.

    mkstemp/mkdtemp create private (0600/0700) entries and the rename keeps the mode, which would
    make every export unreadable to other users of a shared lab folder.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def check_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """Resolve ``path`` and refuse an existing target unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = True, mode: str = "wb") -> Iterator:
    """Open a temporary file next to ``path``; on success fsync and rename it onto ``path``.

    On any error the temporary file is removed and ``path`` is untouched.
    """
    path = check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish_mode(Path(tmp))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that takes a file name (tifffile, PIL).

    On success the file is fsynced and renamed onto ``path``; on error it is removed.
    """
    path = check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        _publish_mode(tmp_path)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``.

    An existing ``path`` is only replaced when ``overwrite``; the old folder is removed after the
    new one is in place, so a failure at any point leaves either the old or the new folder whole.
    """
    path = check_target(path, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
