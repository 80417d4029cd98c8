"""Sessions are let go when their video layer is removed or the viewer / widget closes during a run:
the run is cancelled (every frame wholly old or new), the session autosaved and closed."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_refsam._autosave import SESSION_FILE
from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import TEXT, headless, open_with_widget, wait_idle

pytestmark = pytest.mark.gui
FRAMES = 40


@pytest.fixture
def video(tmp_path):
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    frames = generate_clip(7, num_frames=FRAMES, size=(64, 96), num_objects=2).frames
    return write_video(tmp_path / "letgo.mp4", frames, fps=10)


def start_first_segment(qtbot, widget, after_frames=3):
    """Start segmenting a video without a session yet; return once ``after_frames`` frames came."""
    frames = []
    assert widget.session is None and widget.segment(TEXT)
    widget._worker.yielded.connect(lambda item: item[0] == "frame" and frames.append(item[1]))
    qtbot.waitUntil(lambda: len(frames) >= after_frames and widget.session is not None, timeout=60_000)
    return widget.session, frames


def frame_threads(name):
    return [t.name for t in threading.enumerate() if t.name == f"refsam-frames-{name}" and t.is_alive()]


def assert_closed(session):
    from src_model.errors import VideoReadError

    with pytest.raises(VideoReadError, match="closed"):
        session.source.get_raw(0)


def assert_saved_old_or_new(model, video, frames_run):
    """The autosave holds the cancelled run: every frame empty (old) or as a full run makes it."""
    from src_model import VideoSession

    path = video.parent / f"{video.name}.refsam" / SESSION_FILE
    assert path.is_file(), "nothing was autosaved"
    saved = VideoSession.load(model, path)
    try:
        labels = np.array(saved.labels)
        assert sorted(saved.objects) == [1] and saved.objects[1]["text"] == TEXT
    finally:
        saved.close()
    new = headless(model, video).labels
    assert all(not labels[t].any() or np.array_equal(labels[t], new[t]) for t in range(len(labels)))
    assert 3 <= len(frames_run) < FRAMES, "the run was not cancelled"
    assert np.array_equal(labels[frames_run[0]], new[frames_run[0]])


def test_removing_the_video_layer_cancels_saves_and_closes(make_napari_viewer, qtbot, video, tiny_model, notes,
                                                           monkeypatch):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video, tiny_model)
    session, frames = start_first_segment(qtbot, widget)
    viewer.layers.remove(viewer.layers["letgo"])
    assert widget.session is None and widget.video_layer is None  # forgotten at once
    wait_idle(qtbot, widget)
    assert widget.session is None and widget.video_layer is None and widget._parked == {}
    assert "video was closed" in widget.status.text() and "saved to" in widget.status.text()
    assert_closed(session)
    assert frame_threads("letgo") == []
    assert not [m for severity, m in notes.all() if severity == "error"]
    assert widget.segment_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert_saved_old_or_new(tiny_model, video, frames)
    # opening the video again restores what the cancelled run made
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    reopened = viewer.open(str(video), plugin="napari-refsam")[0]
    wait_idle(qtbot, widget)
    assert widget.video_layer is reopened and widget.session is not None and widget.session is not session
    assert widget.objects.object_ids() == [1]


@pytest.mark.parametrize("closing", ["viewer", "widget", "dock"])
def test_closing_during_a_first_segment_saves_and_closes(make_napari_viewer, qtbot, video, tiny_model, closing,
                                                         monkeypatch):
    monkeypatch.setattr(RefSAMWidget, "close_wait_s", 120.0)  # a loaded CI machine may take long to stop
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video, tiny_model)
    session, frames = start_first_segment(qtbot, widget)
    if closing == "viewer":
        viewer.close()
    elif closing == "widget":
        widget.close()
    else:  # the close button of the dock widget
        viewer.window.remove_dock_widget(widget)
    # no event loop turn needed: closing waited for the run to stop, be saved and closed
    assert_closed(session)
    assert frame_threads("letgo") == []
    assert_saved_old_or_new(tiny_model, video, frames)
    if closing != "viewer":
        assert widget.session is None and widget._parked == {}


def test_closing_an_idle_widget_closes_every_session(make_napari_viewer, qtbot, video, mp4, tiny_model,
                                                     monkeypatch):
    monkeypatch.setattr(RefSAMWidget, "auto_restore", False)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video, tiny_model)
    assert widget.segment(TEXT)
    wait_idle(qtbot, widget)
    first = widget.session
    viewer.open(str(mp4), plugin="napari-refsam")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(viewer.layers["clip"]))
    assert widget.segment(TEXT)
    wait_idle(qtbot, widget)
    second = widget.session
    assert second is not first and len(widget._parked) == 1
    widget.close()
    assert_closed(first)
    assert_closed(second)
    assert widget.session is None and widget._parked == {}


def test_a_new_run_on_another_layer_while_busy_is_refused_and_parks_nothing(make_napari_viewer, qtbot, video,
                                                                             tiny_model, notes):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video, tiny_model)
    session, _ = start_first_segment(qtbot, widget)
    other = viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="other")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(other))
    assert widget.selected_layer() is other
    assert not widget.segment("the second thing") and not widget.add_from_prompts()
    assert widget.session is session and widget._parked == {}  # the running session stays in place
    assert any("busy" in m for _, m in notes.all())
    first = widget.video_layer
    wait_idle(qtbot, widget)
    assert sorted(session.objects) == [1]
    # Once the run is over the pick takes effect as any pick does (the next action starts on
    # ``other``): the finished session is parked, not lost.
    assert widget.video_layer is None and widget.session is None and widget._parked[id(first)][0] is session
