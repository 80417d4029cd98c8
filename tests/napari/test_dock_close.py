"""Closing the RefSAM dock, and where sessions go: a closed dock does nothing more and locks its
labels layer; a session with no autosave place is saved anyway when let go; a folder chosen
after the work receives it; an autosave made before the folder was chosen is still found."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import TEXT, open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui


def texts(session) -> list:
    return [info["text"] for info in session.objects.values()]


def saved_texts(path, model, video) -> list:
    from src_model import VideoSession

    with VideoSession.load(model, path, video=video) as session:
        return texts(session)


@pytest.fixture
def other_mp4_with_autosave(tmp_path, clip, tiny_model):
    """Another video whose session a previous day left next to it."""
    from src_model import VideoSession
    from src_model.video.source import write_video

    path = write_video(tmp_path / "other.mp4", clip.frames[::-1], fps=10)
    with VideoSession(tiny_model, str(path)) as session:
        session.add_object(text="the blue square")
        list(session.propagate())
        (tmp_path / "other.mp4.refsam").mkdir()
        session.save(tmp_path / "other.mp4.refsam" / "session.npz")
    return path


@pytest.mark.parametrize("after_a_run", [True, False])
def test_a_closed_dock_does_nothing_more_and_locks_its_layer(make_napari_viewer, qtbot, mp4, tiny_model,
                                                               other_mp4_with_autosave, monkeypatch, after_a_run):
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)  # a live widget would restore at once
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    if after_a_run:
        segment(qtbot, widget)
        layer = widget.labels_layer
    viewer.window.remove_dock_widget(widget)
    assert widget.closed
    if after_a_run:
        assert not layer.editable  # a stroke there would reach no session: refused, not lost
    autosave = other_mp4_with_autosave.parent / "other.mp4.refsam" / "session.npz"
    before = autosave.stat().st_mtime_ns
    viewer.open(str(other_mp4_with_autosave), plugin="napari-refsam")
    qtbot.wait(100)
    assert widget.session is None and widget._worker is None
    assert autosave.stat().st_mtime_ns == before and not list(autosave.parent.glob("session-*.npz"))
    note = widget.frame_label.text()
    viewer.dims.set_current_step(0, 3)  # nor does it follow the slider any more
    assert widget.frame_label.text() == note
    # A new dock takes over: it offers (and here restores) the other video's session.
    _, again = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    again.set_model(tiny_model)
    qtbot.waitUntil(lambda: again.session is not None, timeout=60_000)
    wait_idle(qtbot, again)
    assert texts(again.session) == ["the blue square"]


def segment_in_memory_and_close(make_napari_viewer, qtbot, clip, tiny_model):
    """A viewer whose in-memory clip was segmented in a dock that is then closed -> (viewer, labels)."""
    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="sample clip", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    segment(qtbot, widget)
    labels = np.array(widget.labels_layer.data)
    viewer.window.remove_dock_widget(widget)
    return viewer, labels


def test_closing_the_dock_saves_an_in_memory_session_and_restore_brings_it_back(
        make_napari_viewer, qtbot, clip, tiny_model, tmp_path, monkeypatch, notes):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    viewer, labels = segment_in_memory_and_close(make_napari_viewer, qtbot, clip, tiny_model)
    (path,) = (tmp_path / "cache" / "napari-refsam" / "sessions").glob("sample_clip-*.refsam/session.npz")
    assert str(path) in notes.messages() and "Restore…" in notes.messages()
    assert saved_texts(path, tiny_model, clip.frames) == [TEXT]
    monkeypatch.setattr(RefSAMWidget, "auto_restore", False)  # offered again, declined: kept aside
    _, again = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    again.set_model(tiny_model)
    qtbot.wait(50)
    assert not path.exists() and again.session is None
    (path,) = path.parent.glob("session-*.npz")
    assert again.restore_saved_session(path)
    wait_idle(qtbot, again)
    assert texts(again.session) == [TEXT] and np.array_equal(again.session.labels, labels)
    assert np.array_equal(again.labels_layer.data, labels)


def test_a_folder_chosen_after_the_work_receives_it(make_napari_viewer, qtbot, clip, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="in memory", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    segment(qtbot, widget)
    assert widget.autosave_file() is None
    folder = tmp_path / "autosaves"
    widget.autosave_edit.setText(str(folder))
    widget.autosave_edit.editingFinished.emit()
    wait_idle(qtbot, widget)
    assert saved_texts(folder / "in memory.refsam" / "session.npz", tiny_model, clip.frames) == [TEXT]


def test_an_autosave_next_to_the_video_is_found_once_a_folder_is_set(make_napari_viewer, qtbot, tiny_model,
                                                                    other_mp4_with_autosave, tmp_path,
                                                                    monkeypatch, own_settings_file):
    from napari_refsam._restore import AUTOSAVE_SETTING, settings

    settings().setValue(AUTOSAVE_SETTING, str(tmp_path / "autosaves"))  # chosen some other day
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, other_mp4_with_autosave, tiny_model)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=60_000)
    wait_idle(qtbot, widget)
    assert texts(widget.session) == ["the blue square"]
    own = widget.autosave_file()
    assert own.parent.parent == tmp_path / "autosaves" and own.is_file()  # moved into the folder
    assert not (other_mp4_with_autosave.parent / "other.mp4.refsam").exists()


def test_a_file_read_by_napari_itself_is_autosaved_next_to_it(make_napari_viewer, qtbot, clip, tiny_model,
                                                              tmp_path, monkeypatch, notes):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, clip.frames, photometric="rgb")
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari")  # napari's own reader: an array layer, no RefSAM metadata
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    segment(qtbot, widget)
    labels = np.array(widget.labels_layer.data)
    assert widget.autosave_file() == tmp_path / "stack.tif.refsam" / "session.npz"
    assert widget.autosave_file().is_file() and "has no file" not in notes.messages()
    viewer.close()
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    for folder in (None, tmp_path / "autosaves"):  # found next to the file, also once a folder is set
        if folder is not None:
            from napari_refsam._restore import AUTOSAVE_SETTING, settings

            settings().setValue(AUTOSAVE_SETTING, str(folder))
        viewer = make_napari_viewer()
        viewer.open(str(path), plugin="napari")
        _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
        widget.set_model(tiny_model)
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60_000)
        wait_idle(qtbot, widget)
        assert texts(widget.session) == [TEXT] and np.array_equal(widget.labels_layer.data, labels)
        viewer.close()
    assert (tmp_path / "autosaves").is_dir() and not (tmp_path / "stack.tif.refsam").exists()  # moved over


def test_a_dock_closed_while_its_restore_waits_for_a_model_restores_nothing(make_napari_viewer, qtbot, tiny_model,
                                                                           other_mp4_with_autosave, monkeypatch):
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, other_mp4_with_autosave)  # no model: the restore waits for one
    qtbot.wait(50)
    assert widget._pending_restore is not None
    viewer.window.remove_dock_widget(widget)
    widget.set_model(tiny_model)  # a model load that ends after the dock closed
    qtbot.wait(100)
    assert widget.session is None and [layer.name for layer in viewer.layers] == ["other"]


def test_removing_an_in_memory_video_during_a_run_saves_it_once(make_napari_viewer, qtbot, tiny_model, tmp_path,
                                                                notes):
    from src_model.data.synthetic import generate_clip

    frames = generate_clip(5, num_frames=50, size=(64, 96), num_objects=2).frames
    viewer = make_napari_viewer()
    video = viewer.add_image(frames, name="long clip", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    segment(qtbot, widget)  # a first run: the session exists
    assert widget.segment("the blue square")
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=60_000)
    viewer.layers.remove(video)
    wait_idle(qtbot, widget)
    said = [m for _, m in notes.all() if "has no file to autosave next to" in m]
    assert len(said) == 1, said
    path = said[0].split(" to ")[-1].split(" (Restore")[0]
    assert saved_texts(path, tiny_model, frames)[0] == TEXT


def test_a_folder_typed_with_a_tilde_is_the_home_folder(make_napari_viewer, qtbot, mp4, tiny_model, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    widget.autosave_edit.setText("~/autosaves")
    widget.autosave_edit.editingFinished.emit()
    assert widget.autosave_edit.text() == str(tmp_path / "home" / "autosaves")
    segment(qtbot, widget)
    assert widget.autosave_file().is_file() and widget.autosave_file().is_relative_to(tmp_path / "home" / "autosaves")
    assert not any((tmp_path / "cwd").iterdir())  # no folder named "~" where napari was started


def test_moving_to_a_folder_keeps_the_old_autosave_aside(make_napari_viewer, qtbot, mp4, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    beside = mp4.parent / "clip.mp4.refsam"
    assert (beside / "session.npz").is_file()
    widget.autosave_edit.setText(str(tmp_path / "autosaves"))
    widget.autosave_edit.editingFinished.emit()
    wait_idle(qtbot, widget)
    assert saved_texts(widget.autosave_file(), tiny_model, str(mp4)) == [TEXT]
    # The file left next to the video is kept under a dated name: not offered later as the latest.
    assert not (beside / "session.npz").exists() and len(list(beside.glob("session-*.npz"))) == 1


def test_an_in_memory_session_is_offered_back_when_the_dock_opens_again(make_napari_viewer, qtbot, clip, tiny_model,
                                                                        monkeypatch):
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer, labels = segment_in_memory_and_close(make_napari_viewer, qtbot, clip, tiny_model)
    _, again = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    again.set_model(tiny_model)
    qtbot.waitUntil(lambda: again.session is not None, timeout=60_000)
    wait_idle(qtbot, again)
    assert texts(again.session) == [TEXT] and np.array_equal(again.labels_layer.data, labels)
    assert len([layer for layer in viewer.layers if layer.name.startswith("RefSAM labels")]) == 1  # the same one


def test_the_video_list_follows_renamed_layers(make_napari_viewer, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    viewer.layers["clip"].name = "left camera"
    assert widget.layer_combo.currentText() == "left camera"
