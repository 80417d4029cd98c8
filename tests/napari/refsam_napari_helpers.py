"""Helpers shared by the viewer tests (a module, not conftest, so tests can import them)."""
from __future__ import annotations

import numpy as np

from napari_refsam._widget import RefSAMWidget

TEXT = "the red ball"


def wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=timeout)


def open_with_widget(viewer, path, model=None):
    viewer.open(str(path), plugin="napari-refsam")
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    assert isinstance(widget, RefSAMWidget)
    if model is not None:
        widget.set_model(model)
    return widget


def headless(model, path, text=TEXT):
    from src_model import VideoSession

    session = VideoSession(model, str(path))
    session.add_object(text=text)
    for _ in session.propagate():
        pass
    return session


def segment(qtbot, widget, text=TEXT):
    """Segment and record, for every yielded frame, whether the layer already showed it."""
    seen = {}
    assert widget.segment(text)
    worker = widget._worker

    def check(item):  # connected after the widget's own slot, so runs after the frame was put
        if item[0] == "frame":
            seen[item[1]] = np.array_equal(widget.labels_layer.data[item[1]], item[2])

    worker.yielded.connect(check)
    wait_idle(qtbot, widget)
    return seen


def paint_square(viewer, layer, frame, label, centre=(30, 40), size=14):
    viewer.dims.set_current_step(0, frame)
    layer.brush_size = size
    layer.paint((frame, *centre), label)
