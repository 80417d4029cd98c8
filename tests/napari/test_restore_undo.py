"""A restored session keeps its undo history: Undo in the widget takes back what was done before
the viewer was closed, in the session and in the labels layer."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._widget import RefSAMWidget
from refsam_napari_helpers import TEXT, open_with_widget, segment, wait_idle

pytestmark = pytest.mark.gui


def test_undo_after_a_restore_takes_back_the_work_before_it(make_napari_viewer, qtbot, mp4, tiny_model,
                                                            monkeypatch):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    segment(qtbot, widget)
    first = np.array(widget.labels_layer.data)
    segment(qtbot, widget, "the blue square")
    second = np.array(widget.labels_layer.data)
    assert not np.array_equal(first, second)
    viewer.close()  # autosaved next to the video

    monkeypatch.setattr(RefSAMWidget, "auto_restore", True)
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    wait_idle(qtbot, widget)
    assert widget.session is not None and np.array_equal(widget.labels_layer.data, second)
    assert widget.undo_button.isEnabled()
    assert widget.undo()  # the second segment goes, as it would have before the viewer was closed
    wait_idle(qtbot, widget)
    assert sorted(widget.session.objects) == [1] and widget.session.objects[1]["text"] == TEXT
    assert np.array_equal(widget.session.labels, first) and np.array_equal(widget.labels_layer.data, first)
