"""Paint strokes as corrections: only the objects a stroke touched are locked (also when it was
painted during a run), one stroke is one undo step, a new label stays one object, and a stroke
painted during a run survives the viewer closing before the run ends."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._autosave import SESSION_FILE
from refsam_napari_helpers import TEXT, open_with_widget, paint_square, wait_idle

pytestmark = pytest.mark.gui
OTHER = "a blue square"


def paint_during_run(qtbot, widget, start, frame, label, centre, size=6):
    """Start a run with ``start()``; when its frame 3 arrives, paint ``frame`` (not reached yet)."""
    painted = {}

    def paint_once(item):
        if item[0] == "frame" and item[1] == 3 and not painted:
            layer = widget.labels_layer
            before = np.array(layer.data[frame])
            paint_square(widget.viewer, layer, frame, label, centre=centre, size=size)
            painted["stroke"] = np.asarray(layer.data[frame]) != before

    assert start()
    widget._worker.yielded.connect(paint_once)
    qtbot.waitUntil(lambda: "stroke" in painted, timeout=60_000)
    return painted["stroke"]


def test_stroke_during_a_run_locks_only_the_objects_it_touched(make_napari_viewer, qtbot, long_mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    assert widget.segment(TEXT)
    wait_idle(qtbot, widget)
    stroke = paint_during_run(qtbot, widget, lambda: widget.segment(OTHER), 30, 1, (30, 40))
    assert stroke.any()
    wait_idle(qtbot, widget)
    session = widget.session
    assert 30 in session.keyframes[1] and 30 not in session.keyframes[2], session.keyframes
    assert (session.labels[30] == 2).any(), "object 2 keeps what the run made of frame 30"
    assert (session.labels[30][stroke] == 1).all()
    assert np.array_equal(widget.labels_layer.data, session.labels)


def segment_two_objects(viewer, qtbot, video, model):
    """The RefSAM widget on ``video`` with TEXT as object 1 and OTHER as object 2."""
    widget = open_with_widget(viewer, video, model)
    for text in (TEXT, OTHER):
        assert widget.segment(text)
        wait_idle(qtbot, widget)
    return widget


def test_one_stroke_is_one_undo_step(make_napari_viewer, qtbot, mp4, tiny_model):
    """Object 1 painted over object 2, re-propagated automatically: one Undo reverts it all."""
    viewer = make_napari_viewer()
    widget = segment_two_objects(viewer, qtbot, mp4, tiny_model)
    layer, session = widget.labels_layer, widget.session
    before, keyframes = np.array(session.labels), session.keyframes
    ys, xs = np.nonzero(layer.data[5] == 2)
    widget.auto_repropagate.setChecked(True)
    paint_square(viewer, layer, 5, 1, centre=(int(ys.mean()), int(xs.mean())), size=8)
    wait_idle(qtbot, widget)
    assert 5 in session.keyframes[1] and 5 in session.keyframes[2]  # 2 lost pixels to the stroke
    assert widget.undo()
    wait_idle(qtbot, widget)
    assert session.keyframes == keyframes
    assert np.array_equal(session.labels, before) and np.array_equal(layer.data, before)


def test_new_label_becomes_the_brush_label(make_napari_viewer, qtbot, mp4, tiny_model):
    """Label 9 becomes object 2 and the brush then paints 2: the next stroke extends that object."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert widget.segment(TEXT)
    wait_idle(qtbot, widget)
    layer, session = widget.labels_layer, widget.session
    layer.selected_label = 9  # a label no object has, as the user picks it in the layer controls
    paint_square(viewer, layer, 3, layer.selected_label, centre=(10, 80), size=8)
    wait_idle(qtbot, widget)
    assert sorted(session.objects) == [1, 2]
    assert layer.selected_label == 2 and "object 2" in widget.status.text()
    paint_square(viewer, layer, 10, layer.selected_label, centre=(10, 80), size=8)
    wait_idle(qtbot, widget)
    assert sorted(session.objects) == [1, 2] and session.keyframes[2] == [3, 10]
    assert widget.undo()
    wait_idle(qtbot, widget)
    assert session.keyframes[2] == [3]
    assert widget.undo()  # the new object and its mask: one step
    wait_idle(qtbot, widget)
    assert sorted(session.objects) == [1] and not (layer.data == 2).any()


def test_stroke_during_a_run_survives_closing_the_viewer(make_napari_viewer, qtbot, long_mp4, tiny_model):
    from src_model import VideoSession

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    assert widget.segment(TEXT)
    wait_idle(qtbot, widget)
    stroke = paint_during_run(qtbot, widget, lambda: widget.repropagate(0), 40, 1, (30, 40))
    assert widget._worker is not None and "after this run" in widget.status.text()
    viewer.close()
    saved = VideoSession.load(tiny_model, long_mp4.parent / f"{long_mp4.name}.refsam" / SESSION_FILE)
    try:
        assert 40 in saved.keyframes[1]
        assert (saved.labels[40][stroke] == 1).all()
    finally:
        saved.close()


def test_a_correction_re_propagates_only_the_objects_it_touched(make_napari_viewer, qtbot, long_mp4, tiny_model):
    """A stroke of object 1 away from object 2, re-propagated both ways: object 2 keeps every pixel
    on every frame (re-decoding it backward from the stroke would have moved it)."""
    viewer = make_napari_viewer()
    widget = segment_two_objects(viewer, qtbot, long_mp4, tiny_model)
    layer, session = widget.labels_layer, widget.session
    before = np.array(session.labels)
    frame = 30
    two = np.pad(before[frame] == 2, 5)
    clear = [(y, x) for y in range(5, two.shape[0] - 15) for x in range(5, two.shape[1] - 15)
             if not two[y:y + 11, x:x + 11].any()]  # no pixel of object 2 within 5 of the square
    assert clear, "this clip's frame has no room away from object 2"
    far = clear[len(clear) // 2]
    widget.auto_repropagate.setChecked(True)
    widget.direction.setCurrentText("both")
    paint_square(viewer, layer, frame, 1, centre=tuple(int(v) for v in far), size=6)
    wait_idle(qtbot, widget)
    assert frame in session.keyframes[1] and frame not in session.keyframes.get(2, [])
    after = np.array(session.labels)
    others = [t for t in range(len(before)) if t != frame]  # the stroke itself changed frame 30
    assert not np.array_equal(after[others] == 1, before[others] == 1)  # object 1 was re-propagated
    assert np.array_equal(after == 2, before == 2)
    assert np.array_equal(layer.data, after)


def test_a_mask_painted_before_any_session_starts_one(make_napari_viewer, qtbot, mp4, tiny_model, notes):
    """"Add from prompts" with nothing to add leaves an empty labels layer; a mask painted on it
    is not dropped: it becomes object 1, locked on its frame and propagated from there."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert not widget.add_from_prompts()  # no Shapes / Points: a warning, the layer is there
    layer = widget.labels_layer
    assert widget.session is None and layer is not None and "no rectangles" in notes.messages()
    widget.auto_repropagate.setChecked(True)
    paint_square(viewer, layer, 4, 1, centre=(30, 40), size=10)
    painted = np.asarray(layer.data[4]) == 1
    wait_idle(qtbot, widget)
    session = widget.session
    assert session is not None and sorted(session.objects) == [1] and session.keyframes == {1: [4]}
    assert np.array_equal(session.labels[4] == 1, painted) and painted.any()
    assert np.array_equal(layer.data, session.labels) and widget.objects.object_ids() == [1]
    assert session.can_undo


def test_a_stroke_pending_when_the_video_is_switched_is_applied_and_autosaved(make_napari_viewer, qtbot, mp4,
                                                                             long_mp4, tiny_model, notes):
    """Another video picked in the same turn as a stroke: the stroke goes into the session being
    parked, and that session's autosave holds it (no error about applying the stroke)."""
    from src_model import VideoSession

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert widget.segment(TEXT)
    wait_idle(qtbot, widget)
    viewer.open(str(long_mp4), plugin="napari-refsam")
    clip = viewer.layers["clip"]
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(clip))
    layer, session = widget.labels_layer, widget.session
    paint_square(viewer, layer, 5, 1, centre=(20, 20), size=6)
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(viewer.layers["long"]))  # same turn
    assert widget.session is None and session.keyframes[1] == [5]
    wait_idle(qtbot, widget)
    saved = VideoSession.load(tiny_model, mp4.parent / "clip.mp4.refsam" / SESSION_FILE)
    try:
        assert saved.keyframes[1] == [5] and np.array_equal(saved.labels, session.labels)
    finally:
        saved.close()
    assert "error" not in notes.messages().lower()
