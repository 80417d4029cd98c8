"""What the widget offers matches what it can do: buttons, a deleted labels layer, the restore offer."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_refsam._session_view import LABELS_NAME
from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui


def enabled(widget):
    return {name: getattr(widget, f"{name}_button").isEnabled() for name in ("repropagate", "undo", "remove")}


def test_buttons_offer_only_what_can_act(make_napari_viewer, qtbot, mp4, tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert enabled(widget) == {"repropagate": False, "undo": False, "remove": False}  # no session yet
    assert widget.segment_button.isEnabled()
    segment(qtbot, widget)
    assert enabled(widget) == {"repropagate": True, "undo": True, "remove": False}  # no row selected
    widget.objects.selectRow(0)
    assert enabled(widget)["remove"]
    while widget.session.can_undo:
        assert widget.undo()
        wait_idle(qtbot, widget)  # each undo is autosaved
    assert not enabled(widget)["undo"] and enabled(widget)["repropagate"] == bool(widget.session.objects)


def test_a_deleted_labels_layer_is_noticed_and_made_again_from_the_session(make_napari_viewer, qtbot, mp4,
                                                                          tiny_model):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    viewer.layers.remove(viewer.layers[LABELS_NAME])  # frame 2 is rewritten from the session below
    assert widget.labels_layer is None  # the layer list's own object is held, so its removal is seen
    assert widget.repropagate(2)
    wait_idle(qtbot, widget)
    layer = widget.labels_layer
    assert layer is not None and layer in viewer.layers and layer.name == LABELS_NAME
    assert np.array_equal(layer.data, widget.session.labels)


def test_no_restore_dialog_from_inside_the_constructor(make_napari_viewer, qtbot, mp4, tiny_model, monkeypatch):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)  # leaves an autosave next to the video
    viewer.close()
    asked = []
    monkeypatch.setattr("napari_refsam._restore.QMessageBox.question",
                        lambda *a, **k: asked.append(a) or 0x00004000)  # Yes
    fresh = make_napari_viewer()
    fresh.open(str(mp4), plugin="napari-refsam")
    _, widget2 = fresh.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    assert asked == []  # not while the widget was being built and docked ...
    widget2.set_model(tiny_model)
    qtbot.waitUntil(lambda: len(asked) == 1, timeout=5_000)  # ... but once the event loop runs
    wait_idle(qtbot, widget2)
    assert isinstance(widget2, RefSAMWidget) and widget2.session is not None


def test_one_undo_takes_back_a_whole_segment(make_napari_viewer, qtbot, mp4, tiny_model):
    """Segment adds an object and propagates it: one Undo removes both (no empty object left in
    the table), and the first object's labels are as they were."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    before = np.array(widget.session.labels)
    segment(qtbot, widget, "the blue square")
    assert sorted(widget.session.objects) == [1, 2]
    assert widget.undo()
    wait_idle(qtbot, widget)
    assert sorted(widget.session.objects) == [1] and widget.objects.object_ids() == [1]
    assert np.array_equal(widget.session.labels, before) and np.array_equal(widget.labels_layer.data, before)


def test_the_status_says_what_happened(make_napari_viewer, qtbot, long_mp4, tiny_model, notes, monkeypatch):
    """Cancel pressed and an action right after: told the run is stopping (not to press Cancel);
    a cancelled model load claims no frames; a moved session says so."""
    import torch

    from src_model.weights import load_refsam

    from napari_refsam import _jobs

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    assert widget.segment("the blue square")
    widget.cancel()
    assert not widget.segment("the red circle")
    assert "still stopping the cancelled run" in notes.messages() and "press Cancel" not in notes.messages()
    wait_idle(qtbot, widget)
    assert widget.status.text().startswith("Cancelled")

    pressed = threading.Event()

    def load_model(kwargs):
        yield ("status", "Loading model…")
        # A load cannot stop half-way: it ends after Cancel was pressed, and its model is dropped.
        # (Waiting here keeps the load from ending before the click, which would be no cancel.)
        assert pressed.wait(10)
        return tiny_model

    monkeypatch.setattr(_jobs, "load_model", load_model)
    assert widget.load_model()
    widget.cancel()
    pressed.set()
    wait_idle(qtbot, widget)
    assert widget.status.text() == "Cancelled."
    torch.manual_seed(3)
    widget.set_model(load_refsam(None, preset="tiny", text_encoder=tiny_model.text_encoder, device="cpu"))
    wait_idle(qtbot, widget)
    assert widget.status.text() == "Model ready: tiny on cpu. The session moved to it."


def test_the_autosave_folder_is_remembered_for_the_next_widget(make_napari_viewer, qtbot, clip, tiny_model,
                                                                tmp_path, own_settings_file):
    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="in memory", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    assert widget.autosave_edit.text() == ""  # nothing chosen yet: next to the video
    folder = tmp_path / "autosaves"
    widget.autosave_edit.setText(f"  {folder} ")
    widget.autosave_edit.editingFinished.emit()  # what Return or leaving the field does
    viewer.close()
    assert str(folder) in "".join(p.read_text() for p in own_settings_file.rglob("*.ini"))
    viewer = make_napari_viewer()  # as after a restart: a new viewer, a new widget
    viewer.add_image(clip.frames, name="in memory", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    assert widget.autosave_edit.text() == str(folder)
    widget.set_model(tiny_model)
    segment(qtbot, widget)
    assert (folder / "in memory.refsam" / "session.npz").is_file()
