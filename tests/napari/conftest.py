"""Fixtures for the viewer tests: a real mp4 written with PyAV, the tiny random model, and a
helper that records napari notifications (errors must become notifications, not exceptions)."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

FRAMES, HEIGHT, WIDTH = 12, 64, 96


@pytest.fixture(scope="session")
def clip():
    from src_model.data.synthetic import generate_clip

    return generate_clip(3, num_frames=FRAMES, size=(HEIGHT, WIDTH), num_objects=2)


@pytest.fixture
def mp4(tmp_path, clip):
    from src_model.video.source import write_video

    return write_video(tmp_path / "clip.mp4", clip.frames, fps=10)


@pytest.fixture
def long_mp4(tmp_path):
    """50 frames for the responsiveness test."""
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    frames = generate_clip(5, num_frames=50, size=(HEIGHT, WIDTH), num_objects=2).frames
    return write_video(tmp_path / "long.mp4", frames, fps=10)


@pytest.fixture
def notes():
    """The napari notifications made during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class Notes:
        def all(self):
            return [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]

        def messages(self):
            return " | ".join(m for _, m in self.all())

    return Notes()


def frames_equal(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


@pytest.fixture(autouse=True)
def own_settings_file(tmp_path_factory, monkeypatch):
    """Each test starts from empty plugin settings (the remembered autosave folder), and never
    writes the user's own ``~/.config/napari-refsam`` or ``~/.cache/napari-refsam`` (sessions of
    in-memory videos are saved there when let go)."""
    from qtpy.QtCore import QSettings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    folder = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_unexpected_dialogs(monkeypatch):
    """A modal question nobody answers would hang the run: fail the test instead (tests that
    expect one patch QMessageBox.question themselves, after this)."""
    from qtpy.QtWidgets import QMessageBox

    def unexpected(*args, **kwargs):
        raise AssertionError(f"unexpected modal dialog: {args[1:3]}")

    monkeypatch.setattr(QMessageBox, "question", staticmethod(unexpected))
