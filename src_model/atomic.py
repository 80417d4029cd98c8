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
from typing import Callable, Iterator


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
    if path.name in ("", ".", ".."):  # "./" or "..": the folder's own name is the target's name
        path = Path(os.path.abspath(path))
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.is_dir():
        problem = "is not a folder" if path.parent.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {path}: {path.parent} {problem}")
    return path


def check_replaceable_dir(path: Path, replaceable: Callable[[str], bool] | None) -> None:
    """Refuse to replace a folder holding anything an export of this kind would not have written.

    Replacing a folder deletes it whole; "--overwrite" must never take a video, its frames or
    unrelated files with it (e.g. ``-o .`` run in the folder that holds the input).
    """
    if path.is_symlink():  # replacing would swap the link for a folder, and leave its target as it was
        raise OutputExistsError(f"{path} is a symbolic link; give the folder it points to")
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputExistsError(f"{path} is a file, not a folder; choose another output folder")
    # Hidden files (.DS_Store, Thumbs-style caches) go with the folder; anything else stays.
    strangers = sorted(entry.name for entry in path.iterdir()
                       if not (entry.is_file() and (entry.name.startswith(".")
                                                    or (replaceable is not None and replaceable(entry.name)))))
    if strangers:
        shown = ", ".join(strangers[:3]) + (f" and {len(strangers) - 3} more" if len(strangers) > 3 else "")
        raise OutputExistsError(f"{path} holds files this export did not write ({shown}); not replacing it: "
                                "choose a new or empty folder")


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
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               replaceable: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``.

    An existing ``path`` is only replaced when ``overwrite``, and only when every entry in it is a
    file whose name ``replaceable`` accepts (what this kind of export writes; None: only an empty
    folder). The old folder is removed after the new one is in place, so a failure at any point
    leaves either the old or the new folder whole.
    """
    path = check_target(path, overwrite)
    check_replaceable_dir(path, replaceable)
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
