"""Where a video's session is autosaved, and keeping an older autosave the user declined.

Layout: ``<video>.refsam/session.npz`` next to the video file or frame folder, or, when the user
picked an autosave folder (needed for videos that are in-memory arrays, e.g. the sample data),
``<folder>/<video name>-<hash of its path>.refsam/session.npz`` (``<layer name>.refsam`` for an
in-memory video).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

SESSION_FILE = "session.npz"


def autosave_path(source: str | None, name: str | None, folder: str | os.PathLike | None) -> Path | None:
    """The autosave file for a video; None when there is nowhere sensible to put it."""
    if folder:
        if not source:  # an in-memory video: its layer name is all there is
            return Path(folder) / f"{name or 'video'}.refsam" / SESSION_FILE
        # One folder serves every video: same-named videos from different places (x/clip.mp4,
        # y/clip.mp4) must not share an autosave, so the name carries a hash of the whole path.
        src = Path(source).resolve()
        tag = hashlib.blake2b(str(src).encode(), digest_size=4).hexdigest()
        return Path(folder) / f"{src.name}-{tag}.refsam" / SESSION_FILE
    if source:
        src = Path(source)
        return src.parent / f"{src.name}.refsam" / SESSION_FILE
    return None


def earlier_autosave_paths(source: str | None, folder: str | os.PathLike | None) -> list[Path]:
    """Where a file's session may have been autosaved before it went into ``folder``: next to the
    file (before the folder was chosen) and, in the folder, under the name files had before it
    carried a path hash. Such a file may belong to another video of the same name, so it is only
    restored once checked (``_jobs.restore`` with ``offered=True``)."""
    if not folder or not source:
        return []
    return [autosave_path(source, None, None), Path(folder) / f"{Path(source).name}.refsam" / SESSION_FILE]


def saved_video_path(path: Path) -> str | None:
    """The video path a session file records (None if it records none, or cannot be read): read
    from its small session.json, without loading the session."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("session.json"))["video"]["path"]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def existing_autosave(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() else None


def set_aside(path: Path) -> Path:
    """Keep a declined autosave under a dated name, so the next autosave does not replace it."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target, n = path.with_name(f"session-{stamp}.npz"), 1
    while target.exists():  # two set aside within one second: keep both
        n += 1
        target = path.with_name(f"session-{stamp}-{n}.npz")
    os.replace(path, target)
    return target


def save_session(session, path) -> Path:
    """Write ``session`` to ``path`` (atomically, by the engine), making its folder first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return session.save(path)


def cache_dir() -> str | None:
    """~/.cache/napari-refsam (or $XDG_CACHE_HOME's): on disk, unlike /tmp on systems that mount it
    as tmpfs (RAM), which would defeat the point. None (the system temp dir) if it cannot be made."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-refsam"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(root)


_LET_GO: dict[str, Path] = {}  # layer name -> the last let-go file this process wrote for it


def let_go_path(name: str) -> Path:
    """Where a session with no autosave place (an in-memory video, no folder) is saved when it is
    let go: a dated file under the cache folder, named after the layer."""
    root = Path(cache_dir() or tempfile.gettempdir()) / "sessions"
    stem = re.sub(r"[^\w.-]+", "_", name or "").strip("._") or "video"
    _LET_GO[name] = path = root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.refsam" / SESSION_FILE
    return path


def latest_let_go(name: str) -> Path | None:
    """The let-go file of a layer of this name written by this napari process (offered back when
    the dock opens again; an in-memory video of another day is another video: Restore… finds it)."""
    path, root = _LET_GO.get(name), Path(cache_dir() or tempfile.gettempdir())
    return path if path is not None and path.is_relative_to(root) and path.is_file() else None
