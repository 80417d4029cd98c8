"""Where a video's session is autosaved, and keeping an older autosave the user declined.

Layout: ``<video>.refsam/session.npz`` next to the video file or frame folder, or
``<folder>/<video name>.refsam/session.npz`` when the user picked an autosave folder (needed for
videos that are in-memory arrays, e.g. the sample data).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

SESSION_FILE = "session.npz"


def autosave_path(source: str | None, name: str | None, folder: str | os.PathLike | None) -> Path | None:
    """The autosave file for a video; None when there is nowhere sensible to put it."""
    if folder:
        stem = Path(source).name if source else (name or "video")
        return Path(folder) / f"{stem}.refsam" / SESSION_FILE
    if source:
        src = Path(source)
        return src.parent / f"{src.name}.refsam" / SESSION_FILE
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
