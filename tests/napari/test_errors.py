"""Bad input becomes a napari notification; the widget keeps working and nothing is lost."""
from __future__ import annotations

import numpy as np
import pytest

from refsam_napari_helpers import open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui


def test_empty_expression_is_a_warning(make_napari_viewer, qtbot, mp4, tiny_model, notes):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    widget.expression.setText("   ")
    widget.segment_button.click()
    assert not widget.is_busy and widget.session is None
    assert "type an expression" in notes.messages()
    assert widget.segment_button.isEnabled()


def test_actions_without_model_or_video_are_warnings(make_napari_viewer, mp4, notes):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    assert not widget.segment("the red ball")
    assert not widget.repropagate()
    assert not widget.add_from_prompts()
    assert "load a model first" in notes.messages()


def test_bad_weights_then_good_weights_through_the_picker(make_napari_viewer, qtbot, tmp_path, mp4, tiny_model,
                                                          notes):
    from src_model.weights import ALL_PARTS, save_refsam

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    widget.model_panel.set_choice("refsam", weights=str(bad), device="cpu")
    widget.model_panel.load_button.click()
    wait_idle(qtbot, widget)
    assert widget.model is None and "bad.safetensors" in notes.messages()
    assert widget.model_panel.load_button.isEnabled()

    widget.model_panel.set_choice("default", device="cpu")  # not bundled yet, or bundled: both fine
    widget.model_panel.load_button.click()
    wait_idle(qtbot, widget)

    good = save_refsam(tiny_model, tmp_path / "tiny.safetensors", parts=ALL_PARTS)
    widget.model_panel.set_choice("refsam", weights=str(good), device="cpu")
    widget.model_panel.load_button.click()
    wait_idle(qtbot, widget)
    assert widget.model is not None and widget.model.weights_id == tiny_model.weights_id
    assert "Model ready" in widget.status.text()
    segment(qtbot, widget)
    assert widget.session is not None and widget.objects.object_ids() == [1]


def test_missing_path_in_picker_is_a_warning(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.model_panel.set_choice("sam")
    assert not widget.load_model()
    assert "SAM checkpoint" in notes.messages()


def test_out_of_memory_keeps_the_work(make_napari_viewer, qtbot, mp4, tiny_model, notes, monkeypatch):
    import torch

    from src_model.video.session import VideoSession

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    before = np.array(widget.labels_layer.data)

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(VideoSession, "add_object", oom)
    assert widget.segment("the blue square")
    wait_idle(qtbot, widget)
    assert "Out of memory" in notes.messages()
    assert np.array_equal(widget.labels_layer.data, before)
    assert widget.objects.object_ids() == [1]
    monkeypatch.undo()
    assert widget.repropagate(0)  # still works
    wait_idle(qtbot, widget)
    assert np.array_equal(widget.labels_layer.data, widget.session.labels)
