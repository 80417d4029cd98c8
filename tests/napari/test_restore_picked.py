"""**Restore…**: a session file the user picks (an autosave kept aside under a dated name) comes back
onto the selected video; the session the video had is kept aside first, never lost."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import TEXT, open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui
OTHER = "the blue square"


def texts(session) -> list:
    return [info["text"] for info in session.objects.values()]


def kept_aside(folder) -> list:
    return sorted(folder.glob("session-*.npz"))


@pytest.fixture
def declined_then_new(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch):
    """A session of TEXT autosaved and closed; the video opened again, its restore declined (so
    kept under a dated name) and OTHER segmented instead: (viewer, widget, kept file, TEXT labels)."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget, TEXT)
    first_labels = np.array(widget.labels_layer.data)
    viewer.close()
    monkeypatch.setattr(RefSAMWidget, "auto_restore", False)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    qtbot.wait(50)
    folder = mp4.parent / "clip.mp4.refsam"
    (kept,) = kept_aside(folder)
    segment(qtbot, widget, OTHER)
    return viewer, widget, kept, first_labels


def test_a_picked_session_replaces_the_current_one_which_is_kept_aside(declined_then_new, qtbot, mp4,
                                                                      tiny_model, notes):
    from src_model import VideoSession

    viewer, widget, kept, first_labels = declined_then_new
    replaced = widget.session
    other_labels = np.array(widget.labels_layer.data)
    assert texts(replaced) == [OTHER]
    assert widget.restore_saved_session(kept)
    wait_idle(qtbot, widget)
    assert texts(widget.session) == [TEXT]
    assert np.array_equal(widget.labels_layer.data, first_labels)
    assert np.array_equal(widget.session.labels, first_labels)
    # The session it replaced: saved, kept under a dated name (not overwritten by the next autosave), closed.
    aside = [p for p in kept_aside(kept.parent) if p != kept]
    assert len(aside) == 1 and f"kept as {aside[0]}" in notes.messages()
    with VideoSession.load(tiny_model, aside[0], video=str(mp4)) as back:
        assert texts(back) == [OTHER] and np.array_equal(back.labels, other_labels)
    from src_model.errors import VideoReadError
    with pytest.raises(VideoReadError, match="closed"):
        replaced.source.get_raw(0)
    # The restored session is autosaved at once: it is what the video's autosave holds now.
    with VideoSession.load(tiny_model, kept.parent / "session.npz", video=str(mp4)) as saved:
        assert texts(saved) == [TEXT] and np.array_equal(saved.labels, first_labels)
    # The restored session is the video's session now: it works and autosaves where the video's does.
    segment(qtbot, widget, OTHER)
    with VideoSession.load(tiny_model, mp4.parent / "clip.mp4.refsam" / "session.npz", video=str(mp4)) as saved:
        assert texts(saved) == [TEXT, OTHER]


def test_a_picked_file_that_cannot_be_restored_changes_nothing(declined_then_new, qtbot, notes):
    viewer, widget, kept, _ = declined_then_new
    session, labels = widget.session, np.array(widget.labels_layer.data)
    autosave = kept.parent / "session.npz"
    autosave_bytes = autosave.read_bytes()
    damaged = kept.parent / "damaged.npz"
    damaged.write_bytes(kept.read_bytes()[:300])
    widget.restore_saved_session(damaged)
    wait_idle(qtbot, widget)
    assert "restoring the session" in notes.messages().lower()
    assert widget.session is session and texts(session) == [OTHER]
    assert np.array_equal(widget.labels_layer.data, labels)
    assert autosave.read_bytes() == autosave_bytes  # the current session's autosave neither moved nor rewritten
    assert kept_aside(kept.parent) == [kept]
    segment(qtbot, widget, TEXT)  # and the widget goes on working
    assert texts(widget.session) == [OTHER, TEXT]


def test_a_session_saved_nowhere_is_not_replaced(make_napari_viewer, qtbot, clip, tiny_model, tmp_path, notes):
    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="in memory", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    segment(qtbot, widget, TEXT)
    session, labels = widget.session, np.array(widget.labels_layer.data)
    elsewhere = tmp_path / "elsewhere.npz"
    session.save(elsewhere)
    assert not widget.restore_saved_session(elsewhere)
    assert "saved nowhere" in notes.messages() and "Autosave-to folder" in notes.messages()
    assert widget.session is session and np.array_equal(widget.labels_layer.data, labels)
    # With an autosave folder, the restore goes ahead and the current session is kept there.
    widget.autosave_edit.setText(str(tmp_path / "autosaves"))
    assert widget.restore_saved_session(elsewhere)
    wait_idle(qtbot, widget)
    assert widget.session is not session and np.array_equal(widget.session.labels, labels)
    assert len(kept_aside(widget.autosave_file().parent)) == 1


def test_a_file_picked_before_a_model_is_loaded_still_keeps_the_autosave(make_napari_viewer, qtbot, mp4,
                                                                         tiny_model, monkeypatch):
    from src_model import VideoSession

    folder = mp4.parent / "clip.mp4.refsam"
    folder.mkdir()
    for name, text in (("session-20240101-000000.npz", "an old expression"), ("session.npz", "the newest work")):
        with VideoSession(tiny_model, str(mp4)) as session:
            session.add_object(text=text)
            list(session.propagate())
            session.save(folder / name)
    own, picked = folder / "session.npz", folder / "session-20240101-000000.npz"
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4)  # no model: the offered autosave waits for one
    qtbot.wait(50)
    widget.restore_saved_session(picked)  # the user picks the dated file instead; it waits too
    widget.set_model(tiny_model)
    wait_idle(qtbot, widget)
    assert texts(widget.session) == ["an old expression"]
    newest = [p for p in kept_aside(folder) if p != picked]
    assert len(newest) == 1  # the newest work, kept under a dated name, not overwritten later
    with VideoSession.load(tiny_model, newest[0], video=str(mp4)) as kept:
        assert texts(kept) == ["the newest work"]
    with VideoSession.load(tiny_model, own, video=str(mp4)) as saved:
        assert texts(saved) == ["an old expression"]


def test_a_failed_restore_onto_a_video_without_a_session_adds_no_layer(make_napari_viewer, qtbot, mp4, clip,
                                                                       tiny_model, tmp_path, notes):
    from src_model import VideoSession

    other_size = tmp_path / "other.npz"
    with VideoSession(tiny_model, clip.frames[:, :32]) as session:  # a video of another frame size
        session.add_object(text=TEXT)
        list(session.propagate())
        session.save(other_size)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    layers = [layer.name for layer in viewer.layers]
    widget.restore_saved_session(other_size)
    wait_idle(qtbot, widget)
    assert "saved for a video of shape" in notes.messages()
    assert [layer.name for layer in viewer.layers] == layers and widget.session is None


def test_a_stroke_just_before_restore_stays_with_its_session(declined_then_new, qtbot, mp4, tiny_model):
    from src_model import VideoSession
    from refsam_napari_helpers import paint_square

    viewer, widget, kept, _ = declined_then_new
    paint_square(viewer, widget.labels_layer, 3, 5, centre=(20, 20), size=8)  # a new label: a new object
    assert widget.restore_saved_session(kept)  # in the same turn of the event loop
    wait_idle(qtbot, widget)
    assert texts(widget.session) == [TEXT]  # the restored session got no stroke
    (aside,) = [p for p in kept_aside(kept.parent) if p != kept]
    with VideoSession.load(tiny_model, aside, video=str(mp4)) as before:
        assert len(before.objects) == 2 and before.keyframes[2] == [3]  # the stroke, with its session
