"""Restores and model switches that cannot go as asked, and a single image with a placement: the
widget must neither put a session on the wrong video, nor lose one, nor claim a model it does not use."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import TEXT, open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui


def segmented_autosave(make_napari_viewer, qtbot, video, model):
    """Segment ``video`` once in a viewer that is then closed: its autosave is left next to it."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video, model)
    segment(qtbot, widget)
    saved = np.array(widget.labels_layer.data)
    viewer.close()
    return saved


def hold_new_sessions(monkeypatch):
    """Until the returned event is set, a job that makes a session waits before making it: the
    "picked before the first run's session arrives" cases happen every time, not by timing
    (``viewer.open`` may run the event loop, which would deliver an early session)."""
    import threading

    from napari_refsam import _jobs

    gate, make = threading.Event(), _jobs._ensure_session

    def held(session, *args):
        if session is None:
            assert gate.wait(60), "the test never let the session be made"
        return (yield from make(session, *args))

    monkeypatch.setattr(_jobs, "_ensure_session", held)
    return gate


def test_a_restore_waiting_for_the_model_goes_to_its_own_video(make_napari_viewer, qtbot, mp4, tiny_model,
                                                               monkeypatch):
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    saved = segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    other = write_video(mp4.parent / "other.mp4", generate_clip(9, num_frames=len(saved), size=saved.shape[1:]).frames,
                        fps=10)
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4)  # no model yet: the restore waits for one
    qtbot.wait(50)
    assert "restored once a model is loaded" in widget.status.text()
    viewer.open(str(other), plugin="napari-refsam")  # a second video, same shape; it is selected now
    assert widget.selected_layer().name == "other"
    widget.set_model(tiny_model)
    wait_idle(qtbot, widget)
    assert widget.video_layer.name == "clip" and widget.selected_layer().name == "clip"
    assert np.array_equal(widget.labels_layer.data, saved)
    assert not (mp4.parent / "other.mp4.refsam").exists()  # nothing of clip's saved as other's session


def test_an_autosave_that_no_longer_fits_the_video_is_kept_not_overwritten(make_napari_viewer, qtbot, mp4, clip,
                                                                          tiny_model, notes, monkeypatch):
    from src_model import VideoSession
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    saved = segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    write_video(mp4, generate_clip(3, num_frames=len(saved) - 4, size=saved.shape[1:]).frames, fps=10)  # re-cut
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    qtbot.waitUntil(lambda: "was saved for a video of shape" in notes.messages(), timeout=30_000)
    wait_idle(qtbot, widget)
    assert widget.session is None
    segment(qtbot, widget, "the blue square")  # a fresh session on the new video, autosaved
    folder = mp4.parent / "clip.mp4.refsam"
    kept = list(folder.glob("session-*.npz"))
    assert len(kept) == 1 and str(kept[0]) in notes.messages()
    old = VideoSession.load(tiny_model, kept[0], video=np.asarray(clip.frames))  # the earlier work, whole
    try:
        assert np.array_equal(old.labels, saved) and old.objects[1]["text"] == TEXT
    finally:
        old.close()


def test_a_model_the_session_cannot_move_to_is_not_taken(make_napari_viewer, qtbot, mp4, tiny_model, notes):
    import torch

    from src_model.weights import load_refsam

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    torch.manual_seed(1)
    prompts_only = load_refsam(None, preset="tiny", text_encoder=False, device="cpu")
    widget.set_model(prompts_only)  # the session has an expression: it cannot move to this model
    wait_idle(qtbot, widget)
    assert "no text encoder" in notes.messages()
    assert widget.session.model is tiny_model and widget.model is tiny_model  # one model, the one used


def test_a_single_image_with_scale_and_translate_is_overlaid(make_napari_viewer, qtbot, clip, tiny_model):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.asarray(clip.frames[0]), name="image", scale=(0.5, 0.25), translate=(100, 200))
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    segment(qtbot, widget)
    labels = widget.labels_layer
    assert labels.data.shape == (1, *image.data.shape[:2])
    assert np.allclose(labels.extent.world[:, 1:], image.extent.world)  # over the image, not beside it


def test_cancel_during_a_model_switch_leaves_one_model(make_napari_viewer, qtbot, mp4, tiny_model):
    import torch

    from src_model.weights import load_refsam

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    torch.manual_seed(2)
    other = load_refsam(None, preset="tiny", text_encoder=tiny_model.text_encoder, device="cpu")
    widget.set_model(other)
    widget.cancel()  # the move does not stop half-way; whatever it ends with, both agree
    wait_idle(qtbot, widget)
    assert widget.session.model is widget.model


def test_a_failed_restore_of_a_file_the_user_picked_leaves_the_file_alone(make_napari_viewer, qtbot, mp4,
                                                                          tiny_model, notes, tmp_path):
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    mine = tmp_path / "my_run.npz"
    (mp4.parent / "clip.mp4.refsam" / "session.npz").rename(mine)
    shorter = write_video(tmp_path / "short.mp4", generate_clip(4, num_frames=3, size=(64, 96)).frames, fps=10)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, shorter, tiny_model)
    widget.restore_session(mine)  # a session of another video: refused, and the file stays as it is
    qtbot.waitUntil(lambda: "was saved for a video of shape" in notes.messages(), timeout=30_000)
    wait_idle(qtbot, widget)
    assert mine.is_file() and sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz") == ["my_run.npz"]


def test_a_restore_the_model_cannot_take_waits_for_the_next_model(make_napari_viewer, qtbot, mp4, tiny_model,
                                                                  notes, monkeypatch):
    """An autosave with an expression, opened with a prompts-only model: the restore fails once, and
    is not tried again before every action (a box can still be segmented; the autosave is then
    kept under a dated name). With the next model it is offered, and restored, again."""
    from src_model.weights import load_refsam

    saved = segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, load_refsam(None, preset="tiny", text_encoder=False, device="cpu"))
    wait_idle(qtbot, widget)
    assert "no text encoder" in notes.messages() and widget.session is None
    viewer.dims.set_current_step(0, 2)
    viewer.add_shapes([[[2, 10, 20], [2, 10, 50], [2, 40, 50], [2, 40, 20]]], shape_type="rectangle")
    assert widget.add_from_prompts()  # not another failing restore first
    wait_idle(qtbot, widget)
    assert sorted(widget.session.objects) == [1] and widget.session.objects[1]["text"] is None
    folder = mp4.parent / "clip.mp4.refsam"
    kept = list(folder.glob("session-*.npz"))
    assert len(kept) == 1 and str(kept[0]) in notes.messages()
    # The set-aside file is the user's to restore; a fresh viewer with a text model restores the
    # video's current autosave (the box session) — and a failed restore is retried on a new model:
    viewer2 = make_napari_viewer()
    kept[0].replace(folder / "session.npz")  # the expression session is the autosave again
    other = open_with_widget(viewer2, mp4, load_refsam(None, preset="tiny", text_encoder=False, device="cpu"))
    wait_idle(qtbot, other)
    assert other.session is None
    other.set_model(tiny_model)
    wait_idle(qtbot, other)
    assert other.session is not None and np.array_equal(other.labels_layer.data, saved)


def test_a_dropped_pending_restore_is_offered_again_not_overwritten(make_napari_viewer, qtbot, mp4, tiny_model,
                                                                    monkeypatch):
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    saved = segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    other = write_video(mp4.parent / "second.mp4", generate_clip(9, num_frames=len(saved), size=saved.shape[1:]).frames,
                        fps=10)
    segmented_autosave(make_napari_viewer, qtbot, other, tiny_model)
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4)  # no model: clip's restore waits
    viewer.open(str(other), plugin="napari-refsam")  # second's restore replaces it
    qtbot.wait(50)
    widget.set_model(tiny_model)
    wait_idle(qtbot, widget)
    assert widget.video_layer.name == "second"
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(viewer.layers["clip"]))  # back to clip
    wait_idle(qtbot, widget)
    assert widget.video_layer.name == "clip"
    assert np.array_equal(widget.labels_layer.data, saved)  # offered again and restored, not lost


def segment_then_close_the_dock(make_napari_viewer, qtbot, video, model, monkeypatch):
    """A viewer whose RefSAM dock segmented ``video`` and was closed: (viewer, its labels layer,
    the labels it showed); a dock opened again restores on its own (``auto_restore``)."""
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    first = open_with_widget(viewer, video, model)
    segment(qtbot, first)
    layer = first.labels_layer
    viewer.window.remove_dock_widget(first)
    return viewer, layer, np.array(layer.data)


def test_reopening_the_dock_restores_into_the_same_labels_layer(make_napari_viewer, qtbot, mp4, tiny_model,
                                                                monkeypatch):
    """Closing the RefSAM dock and opening it again from the Plugins menu: the restored session goes
    back into the labels layer the first widget made (one layer, watched again: a stroke corrects)."""
    from napari.layers import Labels

    from refsam_napari_helpers import paint_square

    viewer, layer, saved = segment_then_close_the_dock(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)  # the autosave is offered and taken
    wait_idle(qtbot, widget)
    assert [x for x in viewer.layers if isinstance(x, Labels)] == [layer]
    assert widget.labels_layer is layer and widget.session is not None
    assert np.array_equal(layer.data, saved) and np.array_equal(widget.session.labels, saved)
    paint_square(viewer, layer, 4, 1, centre=(10, 10), size=6)
    wait_idle(qtbot, widget)
    assert 4 in widget.session.keyframes[1]
    assert np.array_equal(widget.session.labels[4], layer.data[4])


def test_a_layer_painted_while_no_widget_watched_it_is_left_as_it_is(make_napari_viewer, qtbot, mp4, tiny_model,
                                                                     monkeypatch):
    """A stroke made after the dock was closed is in the old layer only: the restore goes into a new
    layer, and the old one keeps the stroke (nothing the user drew is overwritten)."""
    from refsam_napari_helpers import paint_square

    viewer, layer, saved = segment_then_close_the_dock(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch)
    paint_square(viewer, layer, 4, 7, centre=(10, 10), size=6)
    painted = np.array(layer.data)
    assert not np.array_equal(painted, saved)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    wait_idle(qtbot, widget)
    assert widget.labels_layer is not layer and widget.labels_layer in viewer.layers
    assert np.array_equal(widget.labels_layer.data, saved) and np.array_equal(layer.data, painted)


def test_a_video_opened_while_the_first_segment_starts_keeps_its_saved_session(make_napari_viewer, qtbot, mp4,
                                                                               tiny_model, monkeypatch):
    """Opening a video with an autosave while the first run on another video has not made its
    session yet: the dock stays with the run (its session is neither shown as nor saved over the
    other video's); picking the other video afterwards restores its saved session."""
    from src_model import VideoSession
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    from napari_refsam._autosave import SESSION_FILE

    other = write_video(mp4.parent / "other.mp4", generate_clip(9, num_frames=12, size=(64, 96)).frames, fps=10)
    saved = segmented_autosave(make_napari_viewer, qtbot, other, tiny_model)
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    clip_layer = viewer.layers["clip"]
    gate = hold_new_sessions(monkeypatch)
    assert widget.segment("the blue square")
    viewer.open(str(other), plugin="napari-refsam")
    assert widget.session is None and widget.selected_layer() is clip_layer  # the dock stays with the run
    gate.set()
    wait_idle(qtbot, widget)
    assert widget.video_layer is clip_layer and widget.session.objects[1]["text"] == "the blue square"
    assert np.array_equal(widget.labels_layer.data, widget.session.labels)
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(viewer.layers["other"]))
    wait_idle(qtbot, widget)
    assert widget.video_layer is viewer.layers["other"]
    assert np.array_equal(widget.session.labels, saved) and widget.session.objects[1]["text"] == TEXT
    assert np.array_equal(widget.labels_layer.data, saved)
    parked, parked_labels = widget._parked[id(clip_layer)]
    assert parked.objects[1]["text"] == "the blue square" and np.array_equal(parked_labels.data, parked.labels)
    on_disk = VideoSession.load(tiny_model, other.parent / "other.mp4.refsam" / SESSION_FILE)
    try:
        assert np.array_equal(on_disk.labels, saved) and on_disk.objects[1]["text"] == TEXT
    finally:
        on_disk.close()


def test_a_new_session_never_replaces_an_autosave_it_was_not_restored_from(tmp_path, mp4, tiny_model):
    """The job that makes a session keeps an autosave already there (under a dated name)."""
    from src_model import VideoSession

    from napari_refsam import _jobs
    from napari_refsam._autosave import SESSION_FILE, save_session
    from napari_refsam._workers import CancelToken

    earlier = VideoSession(tiny_model, str(mp4))
    earlier.add_object(text=TEXT)
    for _ in earlier.propagate():
        pass
    path = save_session(earlier, tmp_path / "clip.refsam" / SESSION_FILE)
    items, body = [], _jobs.segment(None, tiny_model, str(mp4), "the blue square", CancelToken(), path)
    try:
        while True:
            items.append(next(body))
    except StopIteration:
        pass
    kept = list(path.parent.glob("session-*.npz"))
    assert len(kept) == 1 and any(item[0] == "warning" and str(kept[0]) in item[1] for item in items)
    session = next(item[1] for item in items if item[0] == "session")
    for file, text, labels in ((kept[0], TEXT, earlier.labels), (path, "the blue square", session.labels)):
        loaded = VideoSession.load(tiny_model, file)
        try:
            assert loaded.objects[1]["text"] == text and np.array_equal(loaded.labels, labels)
        finally:
            loaded.close()
    earlier.close()
    session.close()


def test_picking_a_parked_video_while_the_first_segment_starts_keeps_both_sessions(make_napari_viewer, qtbot,
                                                                                    mp4, tiny_model, monkeypatch):
    """Picking a video segmented earlier (its session parked) before the first run on another video
    has made its session: neither session takes the other's place or layers."""
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    other = write_video(mp4.parent / "other.mp4", generate_clip(9, num_frames=12, size=(64, 96)).frames, fps=10)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, other, tiny_model)
    segment(qtbot, widget)
    first, first_labels = widget.session, widget.labels_layer
    viewer.open(str(mp4), plugin="napari-refsam")
    clip_layer, other_layer = viewer.layers["clip"], viewer.layers["other"]
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(clip_layer))  # "other" is parked
    assert widget.session is None and id(other_layer) in widget._parked
    gate = hold_new_sessions(monkeypatch)
    assert widget.segment("the blue square")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(other_layer))
    assert widget.session is None and widget.video_layer is clip_layer  # no session yet
    gate.set()
    wait_idle(qtbot, widget)
    second = widget._parked[id(clip_layer)][0]
    assert second is not first and second.objects[1]["text"] == "the blue square"
    # Once the run is over the pick takes effect: back to "other" and its own session.
    assert widget.video_layer is other_layer and widget.session is first and widget.labels_layer is first_labels
    assert widget._parked[id(clip_layer)][0] is second and first.objects[1]["text"] == TEXT


def test_picking_a_parked_video_while_a_model_loads_adopts_its_session(make_napari_viewer, qtbot, mp4, tiny_model,
                                                                       monkeypatch):
    """A video whose session is parked, picked while Load model runs: once loaded, that very session
    comes back (with its undo history), not a restore of its own older autosave."""
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    from napari_refsam import _jobs

    def load_model(kwargs):  # the bundled model would move the session; the same model keeps it
        yield ("status", "Loading model…")
        return tiny_model

    monkeypatch.setattr(_jobs, "load_model", load_model)
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    other = write_video(mp4.parent / "other.mp4", generate_clip(9, num_frames=12, size=(64, 96)).frames, fps=10)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, other, tiny_model)
    segment(qtbot, widget)
    first = widget.session
    viewer.open(str(mp4), plugin="napari-refsam")
    clip_layer, other_layer = viewer.layers["clip"], viewer.layers["other"]
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(clip_layer))
    assert widget.session is None and id(other_layer) in widget._parked
    assert widget.load_model()
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(other_layer))  # during the load
    wait_idle(qtbot, widget)
    assert widget.video_layer is other_layer and widget.session is first and first.can_undo
    assert widget._parked == {} and not list((mp4.parent / "other.mp4.refsam").glob("session-*.npz"))


def segment_with_autosave_folder(make_napari_viewer, qtbot, video, model, folder, text=TEXT):
    """Segment ``video`` in a viewer autosaving to ``folder``, then close it: (its labels, its autosave)."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video)
    widget.autosave_edit.setText(str(folder))  # before the model: the offer is made with it
    widget.set_model(model)
    wait_idle(qtbot, widget)
    segment(qtbot, widget, text)
    saved, path = np.array(widget.labels_layer.data), widget.autosave_file()
    viewer.close()
    return saved, path


def test_same_named_videos_sharing_an_autosave_folder_keep_their_own_sessions(make_napari_viewer, qtbot, tmp_path,
                                                                             clip, tiny_model, notes, monkeypatch):
    """x/clip.mp4 and y/clip.mp4 autosaved to one folder: two autosaves, each restored onto its own
    video (never x's objects and labels onto y, nor one set aside as the other's)."""
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)  # an offer of the other's session is taken
    saves = tmp_path / "saves"
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    x = write_video(tmp_path / "x" / "clip.mp4", clip.frames, fps=10)
    frames = np.asarray(clip.frames)
    y = write_video(tmp_path / "y" / "clip.mp4",
                    generate_clip(9, num_frames=len(frames), size=frames.shape[1:3]).frames, fps=10)  # same shape
    texts = {x: TEXT, y: "the blue square"}
    saved = {video: segment_with_autosave_folder(make_napari_viewer, qtbot, video, tiny_model, saves, texts[video])
             for video in (x, y)}
    assert saved[x][1] != saved[y][1] and saved[x][1].is_file() and saved[y][1].is_file()
    for video in (x, y):
        viewer = make_napari_viewer()
        widget = open_with_widget(viewer, video)
        widget.autosave_edit.setText(str(saves))
        widget.set_model(tiny_model)
        wait_idle(qtbot, widget)
        assert widget.session is not None and widget.objects.object_ids() == [1]
        assert widget.session.objects[1]["text"] == texts[video]
        assert np.array_equal(widget.labels_layer.data, saved[video][0])
        viewer.close()
    assert not list(saves.glob("*/session-*.npz")) and "not restored" not in notes.messages()


def test_an_autosave_of_a_video_replaced_since_is_set_aside_not_restored(make_napari_viewer, qtbot, mp4, clip,
                                                                         tiny_model, notes, monkeypatch):
    """The video file replaced by another clip of the same shape: its autosave is not restored onto
    it (the objects and labels belong to the old clip); it is kept under a dated name, and said."""
    from src_model import VideoSession
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    saved = segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    write_video(mp4, generate_clip(9, num_frames=len(saved), size=saved.shape[1:]).frames, fps=10)  # same shape
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    qtbot.waitUntil(lambda: "is another video, or has changed since" in notes.messages(), timeout=30_000)
    wait_idle(qtbot, widget)
    assert widget.session is None and (widget.labels_layer is None or not widget.labels_layer.data.any())
    folder = mp4.parent / "clip.mp4.refsam"
    kept = list(folder.glob("session-*.npz"))
    assert not (folder / "session.npz").exists() and len(kept) == 1
    warning = next(m for s, m in notes.all() if s == "warning" and str(kept[0]) in m)
    assert str(folder / "session.npz") in warning and "not restored" in warning
    old = VideoSession.load(tiny_model, kept[0], video=np.asarray(clip.frames))  # the earlier work, whole
    try:
        assert np.array_equal(old.labels, saved) and old.objects[1]["text"] == TEXT
    finally:
        old.close()


def test_a_picked_session_restored_onto_a_changed_video_says_so(make_napari_viewer, qtbot, mp4, tiny_model, notes,
                                                                tmp_path):
    """A file the user picks may go onto a changed video, but the engine's warning reaches napari."""
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    saved = segmented_autosave(make_napari_viewer, qtbot, mp4, tiny_model)
    mine = tmp_path / "my_run.npz"
    (mp4.parent / "clip.mp4.refsam" / "session.npz").rename(mine)
    write_video(mp4, generate_clip(9, num_frames=len(saved), size=saved.shape[1:]).frames, fps=10)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    widget.restore_session(mine)
    wait_idle(qtbot, widget)
    assert widget.session is not None and np.array_equal(widget.labels_layer.data, saved)
    assert "is not byte-identical to the video" in notes.messages() and mine.is_file()


def test_an_autosave_next_to_a_moved_video_is_still_restored(make_napari_viewer, qtbot, tmp_path, clip, tiny_model,
                                                             notes, monkeypatch):
    """A video folder moved as it was (the file keeps its size and times) keeps its autosave: the
    same video under another path, restored, with the engine's note that it moved."""
    from src_model.video.source import write_video

    (tmp_path / "before").mkdir()
    video = write_video(tmp_path / "before" / "clip.mp4", clip.frames, fps=10)
    saved = segmented_autosave(make_napari_viewer, qtbot, video, tiny_model)
    (tmp_path / "before").rename(tmp_path / "after")
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, tmp_path / "after" / "clip.mp4", tiny_model)
    wait_idle(qtbot, widget)
    assert widget.session is not None and np.array_equal(widget.labels_layer.data, saved)
    assert "is not byte-identical to the video" in notes.messages()
    assert not list((tmp_path / "after" / "clip.mp4.refsam").glob("session-*.npz"))


def test_an_autosave_folder_session_from_before_the_path_hash_is_restored_and_renamed(make_napari_viewer, qtbot,
                                                                                      tmp_path, mp4, tiny_model,
                                                                                      monkeypatch):
    """An autosave folder's ``<video name>.refsam/session.npz`` from before names carried a path hash
    is still offered; restored (so checked to be this video's), it takes the video's new name."""
    saves = tmp_path / "saves"
    saved, path = segment_with_autosave_folder(make_napari_viewer, qtbot, mp4, tiny_model, saves)
    earlier = saves / "clip.mp4.refsam" / "session.npz"
    assert path != earlier
    earlier.parent.mkdir()
    path.replace(earlier)
    path.parent.rmdir()
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4)
    widget.autosave_edit.setText(str(saves))
    widget.set_model(tiny_model)
    wait_idle(qtbot, widget)
    assert widget.session is not None and np.array_equal(widget.labels_layer.data, saved)
    assert path.is_file() and not earlier.parent.exists()


def test_an_old_style_autosave_of_a_same_named_video_is_left_for_that_video(make_napari_viewer, qtbot, tmp_path,
                                                                            mp4, tiny_model, monkeypatch):
    """``saves/clip.mp4.refsam`` from before the path hash, made for y/clip.mp4: opening another
    clip.mp4 first neither offers it nor sets it aside, so y/clip.mp4 still finds its session."""
    from src_model.data.synthetic import generate_clip
    from src_model.video.source import write_video

    saves = tmp_path / "saves"
    saved, path = segment_with_autosave_folder(make_napari_viewer, qtbot, mp4, tiny_model, saves)
    earlier = saves / "clip.mp4.refsam" / "session.npz"
    earlier.parent.mkdir()
    path.replace(earlier)
    path.parent.rmdir()
    (tmp_path / "other").mkdir()
    other = write_video(tmp_path / "other" / "clip.mp4", generate_clip(9, num_frames=len(saved),
                                                                       size=saved.shape[1:]).frames, fps=10)
    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    for video, restored in ((other, False), (mp4, True)):
        viewer = make_napari_viewer()
        widget = open_with_widget(viewer, video)
        widget.autosave_edit.setText(str(saves))
        widget.set_model(tiny_model)
        wait_idle(qtbot, widget)
        assert (widget.session is not None) is restored
        assert earlier.is_file() is not restored and not list(earlier.parent.glob("session-*.npz"))
        if restored:
            assert np.array_equal(widget.session.labels, saved)
        viewer.close()
