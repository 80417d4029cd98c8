"""The RefSAM dock widget in a real viewer: segment, correct, re-propagate, undo, cancel, autosave."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._reader import EXPRESSIONS_KEY
from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import TEXT, headless, open_with_widget, paint_square, segment, wait_idle

pytestmark = pytest.mark.gui


def test_segment_fills_all_frames_like_headless(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    seen = segment(qtbot, widget)
    layer = widget.labels_layer
    num_frames = viewer.layers[0].data.shape[0]
    assert layer is not None and layer.data.shape == (num_frames, *viewer.layers[0].data.shape[1:3])
    assert sorted(seen) == list(range(num_frames)) and all(seen.values())  # every frame, live
    reference = headless(tiny_model, mp4)
    assert np.array_equal(layer.data, reference.labels)
    assert np.array_equal(layer.data, widget.session.labels)
    assert layer.data.any(), "the tiny model segmented nothing: the test would prove little"
    assert widget.objects.object_ids() == [1]
    assert layer.metadata[EXPRESSIONS_KEY] == {1: [TEXT]}
    assert (mp4.parent / "clip.mp4.refsam" / "session.npz").is_file()  # autosaved


def test_correction_repropagate_and_undo(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    layer = widget.labels_layer
    before = np.array(layer.data)
    k = 4
    paint_square(viewer, layer, k, 1)
    painted = np.array(layer.data[k])
    assert not np.array_equal(painted, before[k])
    wait_idle(qtbot, widget)  # the stroke was detected and locked as a keyframe
    assert widget.session.keyframes[1] == [k]
    assert np.array_equal(widget.session.labels[k], painted)
    assert "keyframe for object 1" in widget.frame_label.text()
    assert widget.objects.item(0, 3).text() == str(k)
    after_correction = np.array(layer.data)

    assert widget.repropagate(k)
    wait_idle(qtbot, widget)
    after = np.array(layer.data)
    assert np.array_equal(after[k], painted)  # the keyframe is untouched
    assert any(not np.array_equal(after[t], before[t]) for t in range(k + 1, len(after)))
    assert np.array_equal(after, widget.session.labels)

    assert widget.undo()  # the re-propagation
    wait_idle(qtbot, widget)
    assert np.array_equal(layer.data, after_correction)
    assert widget.undo()  # the correction
    wait_idle(qtbot, widget)
    assert np.array_equal(layer.data, before) and widget.session.keyframes[1] == []


def test_auto_repropagate_after_stroke(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    layer = widget.labels_layer
    before = np.array(layer.data)
    widget.auto_repropagate.setChecked(True)
    paint_square(viewer, layer, 6, 0, size=40)  # erase: also a correction
    painted = np.array(layer.data[6])
    wait_idle(qtbot, widget)
    assert 6 in widget.session.keyframes[1]
    assert np.array_equal(layer.data[6], painted)
    assert any(not np.array_equal(layer.data[t], before[t]) for t in range(len(before)) if t != 6)
    assert np.array_equal(layer.data, widget.session.labels)


def test_cancel_leaves_every_frame_old_or_new(make_napari_viewer, qtbot, long_mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    segment(qtbot, widget, "the red ball")
    old = np.array(widget.labels_layer.data)
    frames = []
    assert widget.segment("the blue square")
    widget._worker.yielded.connect(lambda item: item[0] == "frame" and (
        frames.append(item[1]), len(frames) == 5 and widget.cancel()))
    wait_idle(qtbot, widget)
    got = np.array(widget.labels_layer.data)
    assert np.array_equal(got, widget.session.labels)
    assert widget.status.text().startswith("Cancelled")
    reference = headless(tiny_model, long_mp4)  # the same two objects, run to the end
    reference.add_object(text="the blue square")
    for _ in reference.propagate(obj_ids=[2]):
        pass
    new = reference.labels
    assert all(np.array_equal(got[t], old[t]) or np.array_equal(got[t], new[t]) for t in range(len(got)))
    assert 5 <= len(frames) < len(got)
    assert any(not np.array_equal(got[t], new[t]) for t in range(len(got))), "the run was not cut short"
    assert np.array_equal(got[frames[0]], new[frames[0]])


def test_autosave_restores_in_fresh_viewer(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    paint_square(viewer, widget.labels_layer, 3, 1)
    wait_idle(qtbot, widget)
    saved = np.array(widget.labels_layer.data)
    keyframes = widget.session.keyframes
    viewer.close()

    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    fresh = make_napari_viewer()
    widget2 = open_with_widget(fresh, mp4)
    qtbot.wait(50)  # the offer is made once the event loop runs; without a model it waits
    assert widget2.session is None and "restored once a model is loaded" in widget2.status.text()
    widget2.set_model(tiny_model)
    wait_idle(qtbot, widget2)
    assert widget2.session is not None
    assert np.array_equal(widget2.labels_layer.data, saved)
    assert widget2.session.keyframes == keyframes
    assert widget2.objects.object_ids() == [1]


def test_declined_autosave_is_kept(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    viewer.close()
    from qtpy.QtWidgets import QMessageBox

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    fresh = make_napari_viewer()
    widget2 = open_with_widget(fresh, mp4, tiny_model)
    qtbot.wait(50)
    folder = mp4.parent / "clip.mp4.refsam"
    assert widget2.session is None and len(asked) == 1 and "Restore it?" in asked[0]
    assert not (folder / "session.npz").exists() and list(folder.glob("session-*.npz"))


def test_prompts_from_shapes_and_points(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    viewer.dims.set_current_step(0, 2)
    shapes = viewer.add_shapes([[[2, 10, 20], [2, 10, 50], [2, 40, 50], [2, 40, 20]]], shape_type="rectangle")
    points = viewer.add_points([[2, 50, 80], [5, 5, 5]])
    assert widget.add_from_prompts()
    wait_idle(qtbot, widget)
    objects = widget.session.objects
    assert sorted(objects) == [1, 2]
    assert objects[1]["prompt"]["box"] == pytest.approx((20, 10, 50, 40))
    assert objects[2]["prompt"]["points"] is not None
    assert len(shapes.data) == 0 and len(points.data) == 1  # used prompts are consumed; frame 5's stays
    assert np.array_equal(widget.labels_layer.data, widget.session.labels)


def test_switching_model_keeps_the_session(make_napari_viewer, qtbot, mp4, tiny_model, text_encoder):
    import torch

    from src_model.weights import load_refsam

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    before_paint = np.array(widget.labels_layer.data)
    paint_square(viewer, widget.labels_layer, 2, 1)
    wait_idle(qtbot, widget)
    labels, keyframes = np.array(widget.labels_layer.data), widget.session.keyframes
    torch.manual_seed(1)
    other = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    widget.set_model(other)
    wait_idle(qtbot, widget)
    assert widget.session.model is other
    assert widget.status.text() == "Model ready: tiny on cpu. The session moved to it."
    assert np.array_equal(widget.session.labels, labels) and np.array_equal(widget.labels_layer.data, labels)
    assert widget.session.keyframes == keyframes
    assert len(viewer.layers) == 2  # the same Labels layer, not a second one
    # Undo goes on where it was: the correction (with its re-propagation), then the segment.
    assert widget.undo_button.isEnabled() and widget.undo()
    wait_idle(qtbot, widget)
    assert np.array_equal(widget.labels_layer.data, before_paint) and widget.session.keyframes == {1: []}
    assert widget.undo()
    wait_idle(qtbot, widget)
    assert not widget.labels_layer.data.any() and not widget.session.objects


def test_sample_data_array_video_and_autosave_folder(make_napari_viewer, qtbot, tmp_path, tiny_model, notes):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-refsam", "synthetic_referring_video")
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    assert widget.autosave_file() is None  # an in-memory clip: nowhere to autosave by default
    expressions = viewer.layers[0].metadata["refsam_expressions"]
    completions = widget.expression.completer().model()  # the sample's expressions complete typing
    offered = sorted(completions.index(row, 0).data() for row in range(completions.rowCount()))
    assert offered == sorted({text for texts in expressions.values() for text in texts}) and len(offered) > 3
    segment(qtbot, widget, expressions[1][0])
    assert "has no file, so its session is not autosaved after each change" in notes.messages()  # said, once
    assert widget.undo()
    wait_idle(qtbot, widget)
    widget.autosave_edit.setText(str(tmp_path))
    segment(qtbot, widget, expressions[1][0])
    assert notes.messages().count("is not autosaved") == 1
    assert widget.labels_layer.data.shape == viewer.layers[0].data.shape[:3]
    assert np.array_equal(widget.labels_layer.data, widget.session.labels)
    assert widget.autosave_file().is_file() and widget.autosave_file().is_relative_to(tmp_path)
    assert viewer.dims.axis_labels == ("t", "y", "x")


def test_paint_new_label_and_remove_object(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    before = np.array(widget.labels_layer.data)
    paint_square(viewer, widget.labels_layer, 3, 7, centre=(10, 80), size=8)  # an id no object has
    wait_idle(qtbot, widget)
    objects = widget.session.objects
    assert sorted(objects) == [1, 2] and objects[2]["kind"] == "prompt"
    assert widget.session.keyframes[2] == [3]
    assert widget.objects.item(1, 2).text() == "painted mask @ frame 3"  # what the table says it is
    layer = widget.labels_layer
    assert 7 not in np.asarray(layer.data[3]) and (np.asarray(layer.data[3]) == 2).any()
    assert np.array_equal(layer.data, widget.session.labels)

    widget.objects.selectRow(1)
    assert widget.remove_object()
    wait_idle(qtbot, widget)
    assert sorted(widget.session.objects) == [1] and not (np.asarray(layer.data) == 2).any()
    assert np.array_equal(layer.data, widget.session.labels)
    assert np.array_equal(layer.data[4:], before[4:])  # the new object lived on frame 3 only
    assert widget.undo()
    wait_idle(qtbot, widget)
    assert sorted(widget.session.objects) == [1, 2] and (np.asarray(layer.data[3]) == 2).any()


def test_paint_during_a_run_becomes_a_correction_after_it(make_napari_viewer, qtbot, long_mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    painted = {}

    def paint_once(item):
        if item[0] == "frame" and item[1] == 3 and not painted:
            paint_square(viewer, widget.labels_layer, 30, 1, size=10)
            painted["frame"] = None

    assert widget.segment(TEXT)
    widget._worker.yielded.connect(paint_once)
    qtbot.waitUntil(lambda: "frame" in painted, timeout=60_000)
    qtbot.wait(20)  # napari writes the stroke's pixels right after its paint event
    stroke = widget.labels_layer.data[30] == 1  # the frame was empty before the run
    assert stroke.any()
    wait_idle(qtbot, widget)
    assert 30 in widget.session.keyframes[1]
    # The stroke is applied onto what the run made of frame 30: its pixels are object 1's.
    assert (widget.session.keyframe_mask(1, 30) >= stroke).all()
    assert np.array_equal(widget.labels_layer.data, widget.session.labels)


def test_switching_videos_keeps_each_session(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    first_session, first_labels = widget.session, widget.labels_layer
    viewer.open_sample("napari-refsam", "synthetic_referring_video")
    sample = viewer.layers["Synthetic referring video"]
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(sample))
    assert widget.session is None and widget.objects.object_ids() == []
    segment(qtbot, widget, "the cobalt oval")
    assert widget.session is not first_session and widget.labels_layer is not first_labels
    # A parked session's labels cannot be painted: no session watches them, a stroke would be lost.
    assert not first_labels.editable and widget.labels_layer.editable
    second_labels = widget.labels_layer
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(viewer.layers["clip"]))
    assert widget.session is first_session and widget.labels_layer is first_labels
    assert first_labels.editable and not second_labels.editable
    assert widget.objects.object_ids() == [1]
    assert np.array_equal(first_labels.data, first_session.labels)


def test_ctrl_z_on_the_labels_layer_undoes_the_session(make_napari_viewer, qtbot, mp4, tiny_model):
    """Ctrl+Z pressed on the RefSAM labels layer (through napari's own key handling) reverts the
    session's last edit and the layer with it - not only the stroke's pixels, as napari's Labels
    undo would, which left the correction locked in the session."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    layer = widget.labels_layer
    before = np.array(layer.data)
    paint_square(viewer, layer, 3, 1)
    wait_idle(qtbot, widget)
    assert widget.session.keyframes[1] == [3] and not np.array_equal(layer.data, before)
    viewer.layers.selection.active = layer
    keys = viewer.window._qt_viewer._key_map_handler
    keys.press_key("Control-Z")
    keys.release_key("Control-Z")
    wait_idle(qtbot, widget)
    assert widget.session.keyframes[1] == []
    assert np.array_equal(layer.data, before) and np.array_equal(widget.session.labels, before)


def test_long_video_labels_layer_is_a_file_backed_copy(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch,
                                                        tmp_path):
    """Above LAYER_MEMMAP_BYTES (0 here) the layer's copy of the labels is a memmap of a temporary
    file, not a second copy in RAM; segmenting, painting a correction and undoing work the same."""
    from napari_refsam import _session_view

    monkeypatch.setattr(_session_view, "LAYER_MEMMAP_BYTES", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    layer = widget.labels_layer
    assert isinstance(layer.data, np.memmap) and (tmp_path / "napari-refsam").is_dir()
    assert layer.data.any() and np.array_equal(layer.data, widget.session.labels)
    before = np.array(layer.data)
    paint_square(viewer, layer, 2, 1)
    wait_idle(qtbot, widget)
    assert widget.session.keyframes[1] == [2] and np.array_equal(layer.data, widget.session.labels)
    assert widget.undo()
    wait_idle(qtbot, widget)
    assert np.array_equal(layer.data, before)
