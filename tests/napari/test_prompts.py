"""Add from prompts with prompt layers as users make them: 2-D layers over a video, boxes dragged
from the image corner, clicks off the image, layers edited while the objects are being made, a
cancelled run, a video with a time scale."""
from __future__ import annotations

import numpy as np
import pytest
from refsam_napari_helpers import open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui


def box_at(frame, y0, x0, y1, x1):
    return [[frame, y0, x0], [frame, y0, x1], [frame, y1, x1], [frame, y1, x0]]


def box_with_a_red_click(make_napari_viewer, mp4, model):
    """A viewer with the video, a rectangle on frame 2 and a clicks layer holding one negative
    click inside it -> (viewer, widget, clicks layer)."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, model)
    viewer.dims.set_current_step(0, 2)
    viewer.add_shapes([box_at(2, 10, 10, 40, 60)], shape_type="rectangle")
    widget.negative_clicks.setChecked(True)
    widget.add_clicks_layer()
    clicks = viewer.layers.selection.active
    clicks.add([[2, 25, 30]])
    return viewer, widget, clicks


def test_a_2d_prompt_layer_applies_to_the_frame_shown_and_is_clipped_to_the_image(make_napari_viewer, qtbot, mp4,
                                                                                  clip, tiny_model, notes):
    height, width = np.asarray(clip.frames).shape[1:3]
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    viewer.dims.set_current_step(0, 3)
    # Dragged from the image's top-left corner (napari puts that pixel edge at -0.5) past its right edge.
    shapes = viewer.add_shapes([[[-0.5, -0.5], [-0.5, width + 3], [20, width + 3], [20, -0.5]]],
                               shape_type="rectangle")
    points = viewer.add_points([[40, 10], [height + 20, 10]])  # the second is off the image
    assert widget.add_from_prompts()
    wait_idle(qtbot, widget)
    objects = widget.session.objects
    assert sorted(objects) == [1, 2]
    assert objects[1]["prompt"]["frame"] == 3 and objects[1]["prompt"]["box"] == [0.0, 0.0, width, 20.0]
    assert objects[2]["prompt"]["points"] == [[10.0, 40.0]] and objects[2]["prompt"]["box"] is None
    assert "left out a click of 'Points'" in notes.messages()
    assert len(shapes.data) == 0 and points.data.tolist() == [[height + 20, 10]]  # what was used is gone


def test_an_empty_or_outside_box_is_left_out_and_nothing_half_added(make_napari_viewer, qtbot, mp4, tiny_model,
                                                                    notes):
    width = 96  # conftest's clip
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    viewer.dims.set_current_step(0, 2)
    viewer.add_shapes([box_at(2, 10, 10, 10.4, 40), box_at(2, 10, width + 5, 30, width + 20)],
                      shape_type="rectangle")
    assert not widget.add_from_prompts()
    assert "empty, or outside the 96x64 frame" in notes.messages() and widget.session is None


def test_the_next_click_keeps_the_sign_the_checkbox_shows(make_napari_viewer, qtbot, mp4, tiny_model):
    """Add from prompts selects the clicks it used to remove them, and napari copies a selected
    point's features into the layer's defaults: the sign of the next click must not change with
    it. Selecting a point on purpose does make its sign the next one, and the checkbox says so."""
    _, widget, clicks = box_with_a_red_click(make_napari_viewer, mp4, tiny_model)
    widget.negative_clicks.setChecked(False)
    assert widget.add_from_prompts()
    wait_idle(qtbot, widget)
    assert len(clicks.data) == 0 and not widget.negative_clicks.isChecked()
    clicks.add([[2, 30, 30]])
    assert clicks.features["positive"].tolist() == [True]
    widget.negative_clicks.setChecked(True)
    clicks.add([[2, 35, 35]])
    clicks.selected_data = {0}  # the green one: napari makes its features the next ones
    assert not widget.negative_clicks.isChecked()
    clicks.add([[2, 40, 40]])
    assert clicks.features["positive"].tolist() == [True, False, True]


def test_negative_clicks_alone_are_said_to_make_no_object(make_napari_viewer, qtbot, mp4, tiny_model, notes):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    viewer.dims.set_current_step(0, 2)
    widget.negative_clicks.setChecked(True)
    widget.add_clicks_layer()
    clicks = viewer.layers.selection.active
    clicks.add([[2, 20, 20], [2, 30, 30]])
    assert not widget.add_from_prompts()
    assert "2 negative click(s) outside any box, with no positive click" in notes.messages()
    assert widget.session is None and len(clicks.data) == 2  # nothing added, the clicks are kept


def test_a_negative_click_inside_a_rectangle_refines_that_box(make_napari_viewer, qtbot, mp4, tiny_model):
    _, widget, _ = box_with_a_red_click(make_napari_viewer, mp4, tiny_model)
    assert widget.add_from_prompts()
    wait_idle(qtbot, widget)
    (obj,) = widget.session.objects.values()
    assert obj["prompt"]["box"] is not None and obj["prompt"]["labels"] == [0]


def test_prompts_edited_during_the_run_leave_the_users_other_prompts_alone(make_napari_viewer, qtbot, mp4,
                                                                           tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    viewer.dims.set_current_step(0, 2)
    later, used, kept = box_at(7, 5, 5, 30, 30), box_at(2, 10, 20, 40, 50), box_at(7, 20, 40, 50, 80)
    shapes = viewer.add_shapes([later, used, kept], shape_type="rectangle")
    points = viewer.add_points([[7, 30, 30], [2, 50, 80], [2, 55, 85]])
    assert widget.add_from_prompts()
    shapes.selected_data = {0}  # the user deletes a frame-7 box and point while the objects are made
    shapes.remove_selected()
    points.selected_data = {0}
    points.remove_selected()
    wait_idle(qtbot, widget)
    assert not widget.is_busy and widget.prompts_button.isEnabled()
    assert sorted(widget.session.objects) == [1, 2]
    assert [s.tolist() for s in shapes.data] == [kept] and len(points.data) == 0


def test_a_cancelled_prompt_run_does_not_leave_its_prompts_to_be_added_twice(make_napari_viewer, qtbot, long_mp4,
                                                                             tiny_model, notes):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    viewer.dims.set_current_step(0, 2)
    shapes = viewer.add_shapes([box_at(2, 10, 20, 40, 50)], shape_type="rectangle")
    assert widget.add_from_prompts()
    widget.cancel()
    wait_idle(qtbot, widget)
    assert sorted(widget.session.objects) == [1] and len(shapes.data) == 0
    assert not widget.add_from_prompts() and "no rectangles" in notes.messages()
    assert sorted(widget.session.objects) == [1]


def test_the_frame_is_the_videos_own_when_it_has_a_time_scale(make_napari_viewer, qtbot, clip, tiny_model):
    """A video with scale 2 on time next to a prompt layer with scale 1: the viewer steps in world
    units, the widget works in the video's frames."""
    viewer = make_napari_viewer()
    viewer.add_image(np.asarray(clip.frames), name="video", scale=(2, 1, 1))
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(tiny_model)
    viewer.add_shapes([box_at(6, 10, 20, 40, 50)], shape_type="rectangle")  # world t = 6
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(viewer.layers["video"]))
    viewer.dims.set_point(0, 6)
    assert widget._current_frame() == 3
    assert widget.add_from_prompts()
    wait_idle(qtbot, widget)
    assert widget.session.objects[1]["prompt"]["frame"] == 3
    assert widget.session.keyframes == {1: []} and len(widget.session.labels) == len(clip.frames)


def test_an_image_added_during_the_first_run_does_not_take_the_dock(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert widget.segment("the blue square")
    viewer.add_image(np.zeros((64, 96), np.uint8), name="reference")  # before the session arrives
    wait_idle(qtbot, widget)
    assert widget.video_layer is viewer.layers["clip"] and widget.selected_layer() is viewer.layers["clip"]
    assert widget.session is not None and widget.undo_button.isEnabled() and widget.labels_layer.editable
    segment(qtbot, widget, "the red circle")  # the next action adds to the same session
    assert sorted(widget.session.objects) == [1, 2]


def test_a_box_drawn_round_an_object_segments_it_over_the_video_with_the_bundled_model(make_napari_viewer, qtbot,
                                                                                       clip):
    """The user's way, end to end: a rectangle drawn on the frame shown, Add from prompts, the
    default model; the object's mask fills every frame it shows on."""
    from src_model.weights import load_refsam

    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="clip", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(load_refsam("default", device="cpu"))
    frame = 2
    scores = []
    for obj in sorted(clip.objects):
        truth = clip.labels == obj
        if not truth[frame].any():
            continue
        ys, xs = np.nonzero(truth[frame])
        viewer.dims.set_current_step(0, frame)
        # napari puts pixel edges at +-0.5: the rectangle a user drags round the object's pixels
        viewer.add_shapes([box_at(frame, ys.min() - 0.5, xs.min() - 0.5, ys.max() + 0.5, xs.max() + 0.5)],
                          shape_type="rectangle")
        assert widget.add_from_prompts()
        wait_idle(qtbot, widget)
        (new,) = set(widget.session.objects) - {s[0] for s in scores}
        predicted = np.asarray(widget.labels_layer.data) == new
        shown = [t for t in range(len(truth)) if truth[t].any()]
        scores.append((new, np.mean([(predicted[t] & truth[t]).sum() / (predicted[t] | truth[t]).sum()
                                     for t in shown])))
    # measured: J 0.99 and 1.0 (the text-only file bundled before: 0.06 and 0.0)
    assert len(scores) == 2 and min(j for _, j in scores) >= 0.8, scores


def test_the_clicks_layer_makes_clicks_on_and_off_the_object(make_napari_viewer, qtbot, mp4, tiny_model):
    """New clicks layer: over the video, in add mode; "Negative clicks" makes the next clicks
    negative (red) and leaves the earlier ones as they were; Add from prompts sends both kinds."""
    from napari_refsam._prompts import collect_prompts

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    video = widget.selected_layer()
    viewer.dims.set_current_step(0, 3)
    assert widget.add_clicks_layer() is not None
    layer = viewer.layers.selection.active  # (the widget holds the viewer through napari's plugin proxy)
    assert layer.name == "RefSAM clicks" and layer.mode == "add"
    assert layer.ndim == video.ndim and np.allclose(layer.scale, video.scale)
    layer.add([[3, 40, 10]])  # what a left click in add mode does on frame 3
    widget.negative_clicks.setChecked(True)
    layer.add([[3, 40, 30]])
    assert layer.features["positive"].tolist() == [True, False]
    green, red = layer.face_color[:, :3].tolist()
    assert green[1] > green[0] and red[0] > red[1]  # limegreen, red
    (prompt,), skipped = collect_prompts(viewer.layers, video, 3)
    assert prompt.points == [(10.0, 40.0), (30.0, 40.0)] and prompt.labels == [1, 0] and not skipped
    widget.add_clicks_layer()  # made while negative clicks are on: negative from the start
    second = viewer.layers.selection.active
    assert second is not layer
    second.add([[3, 5, 5]])
    assert second.features["positive"].tolist() == [False]
    viewer.layers.selection.active = layer
    keys = viewer.window._qt_viewer._key_map_handler  # napari's own dispatch of a key press
    keys.press_key("N")  # the N key in the clicks layer: back to positive
    keys.release_key("N")
    assert not widget.negative_clicks.isChecked()
    layer.add([[3, 50, 10]])
    assert layer.features["positive"].tolist() == [True, False, True]
    viewer.layers.remove(second)
    assert widget.add_from_prompts()
    wait_idle(qtbot, widget)
    (obj,) = widget.session.objects.values()
    assert obj["prompt"]["labels"] == [1, 0, 1] and len(layer.data) == 0


def test_a_click_and_a_negative_click_on_the_neighbour_segment_the_object_with_the_bundled_model(
        make_napari_viewer, qtbot, clip):
    """Through the clicks layer, as a user does: a green click on the object, Negative clicks, a red
    click on the other object, Add from prompts; the default model follows the object."""
    from src_model.evaluate import prompt_from_mask
    from src_model.weights import load_refsam

    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="clip", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(load_refsam("default", device="cpu"))
    frame = 2
    viewer.dims.set_current_step(0, frame)
    scores = {}
    for obj in sorted(clip.objects):
        truth = clip.labels == obj
        others = (clip.labels[frame] != obj) & (clip.labels[frame] != 0)
        if not truth[frame].any() or not others.any():
            continue
        (on, off) = prompt_from_mask(truth[frame], "click-neg", others)["points"]
        widget.negative_clicks.setChecked(False)
        widget.add_clicks_layer()
        clicks = viewer.layers.selection.active
        clicks.add([[frame, on[1], on[0]]])
        widget.negative_clicks.setChecked(True)
        clicks.add([[frame, off[1], off[0]]])
        assert clicks.features["positive"].tolist() == [True, False]
        assert widget.add_from_prompts()
        wait_idle(qtbot, widget)
        (new,) = set(widget.session.objects) - set(scores)
        assert widget.session.objects[new]["prompt"]["labels"] == [1, 0]
        predicted = np.asarray(widget.labels_layer.data) == new
        shown = [t for t in range(len(truth)) if truth[t].any()]
        scores[new] = np.mean([(predicted[t] & truth[t]).sum() / (predicted[t] | truth[t]).sum() for t in shown])
    # measured: J 0.99 and 1.0 (the file bundled before, trained on one positive click: 0.99 and 0.42)
    assert len(scores) == 2 and min(scores.values()) >= 0.8, scores


def test_correct_from_prompts_locks_the_models_mask_for_the_selected_object(make_napari_viewer, qtbot, mp4,
                                                                            tiny_model, notes):
    """Select an object, draw a rectangle on a later frame, Correct from prompts: the model's mask
    from the rectangle is that object's keyframe there, the frames after it are re-propagated,
    the rectangle is used up (as Add from prompts' are), and one Undo takes it all back."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget, "the red circle")
    before = np.asarray(widget.labels_layer.data).copy()
    frame, box = 5, (12.0, 8.0, 60.0, 40.0)  # x0, y0, x1, y1
    viewer.dims.set_current_step(0, frame)
    shapes = viewer.add_shapes([box_at(frame, box[1], box[0], box[3], box[2])], shape_type="rectangle")
    assert not widget.correct_button.isEnabled()
    widget.objects.selectRow(0)
    assert widget.correct_button.isEnabled()
    assert widget.correct_from_prompts()
    wait_idle(qtbot, widget)
    session = widget.session
    expected = session.predict_mask(frame, box=box)
    assert session.keyframes == {1: [frame]}
    assert np.array_equal(session.keyframe_mask(1, frame), expected)
    shown = np.asarray(widget.labels_layer.data)
    assert np.array_equal(shown[frame] == 1, expected) and np.array_equal(shown, session.labels)
    assert not np.array_equal(shown[frame + 1:], before[frame + 1:])  # re-propagated from the keyframe
    assert len(shapes.data) == 0 and widget.status.text() == "Object 1 corrected on frame 5 and re-propagated."
    widget.undo()
    wait_idle(qtbot, widget)
    assert session.keyframes == {1: []} and np.array_equal(np.asarray(widget.labels_layer.data), before)


def test_correct_from_prompts_needs_one_prompt_and_an_object(make_napari_viewer, qtbot, mp4, tiny_model, notes):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert not widget.correct_from_prompts()
    assert "nothing to correct yet; segment an object first" in notes.messages()
    segment(qtbot, widget, "the red circle")
    labels = np.asarray(widget.labels_layer.data).copy()
    viewer.dims.set_current_step(0, 4)
    assert not widget.correct_from_prompts()
    assert "select the object to correct" in notes.messages()
    widget.objects.selectRow(0)
    assert not widget.correct_from_prompts()
    assert "found none" in notes.messages()
    viewer.add_shapes([box_at(4, 5, 5, 20, 20), box_at(4, 30, 30, 50, 60)], shape_type="rectangle")
    assert not widget.correct_from_prompts()
    assert "draw one rectangle and/or clicks on frame 4; found 2" in notes.messages()
    assert widget.session.keyframes == {1: []} and np.array_equal(np.asarray(widget.labels_layer.data), labels)


def test_correct_from_prompts_takes_clicks_alone(make_napari_viewer, qtbot, mp4, tiny_model):
    """A green and a red click (no rectangle) on a frame correct the selected object there."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget, "the red circle")
    viewer.dims.set_current_step(0, 4)
    widget.add_clicks_layer()
    clicks = viewer.layers.selection.active
    clicks.add([[4, 30, 40]])
    widget.negative_clicks.setChecked(True)
    clicks.add([[4, 10, 80]])
    widget.objects.selectRow(0)
    assert widget.correct_from_prompts()
    wait_idle(qtbot, widget)
    expected = widget.session.predict_mask(4, points=[(40.0, 30.0), (80.0, 10.0)], labels=[1, 0])
    assert widget.session.keyframes == {1: [4]}
    assert np.array_equal(widget.session.keyframe_mask(1, 4), expected) and len(clicks.data) == 0


def test_cancel_while_the_prediction_runs_locks_nothing_and_keeps_the_rectangle(make_napari_viewer, qtbot, mp4,
                                                                                 tiny_model):
    """Cancel pressed while the model predicts the correction's mask (on a long video: the frame
    being encoded): no keyframe, no label changed, nothing to undo, and the rectangle stays for
    another try. The prediction is held until Cancel is pressed, so the order is certain."""
    import threading

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget, "the red circle")
    session = widget.session
    before, undo_before = np.asarray(widget.labels_layer.data).copy(), session.can_undo
    viewer.dims.set_current_step(0, 5)
    shapes = viewer.add_shapes([box_at(5, 8, 12, 40, 60)], shape_type="rectangle")
    started, cancelled = threading.Event(), threading.Event()
    predict = session.predict_mask

    def held_predict(*args, **kwargs):
        started.set()
        cancelled.wait(60)
        return predict(*args, **kwargs)

    session.predict_mask = held_predict
    widget.objects.selectRow(0)
    assert widget.correct_from_prompts()
    assert started.wait(60)
    widget.cancel()
    cancelled.set()
    wait_idle(qtbot, widget)
    assert session.keyframes == {1: []} and session.can_undo == undo_before
    assert np.array_equal(np.asarray(widget.labels_layer.data), before) and np.array_equal(session.labels, before)
    assert len(shapes.data) == 1 and "corrected" not in widget.status.text()
