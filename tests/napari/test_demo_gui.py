"""``refsam demo`` with a viewer: the sample video, the RefSAM widget, every sample expression segmented."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_demo_segments_every_sample_expression(make_napari_viewer, qtbot, tiny_model):
    from napari_refsam._demo import open_demo, sample_clip, sample_expressions

    viewer = make_napari_viewer()
    driver = open_demo(viewer, tiny_model)
    qtbot.waitUntil(lambda: driver.done, timeout=240_000)
    expected = list(sample_expressions(sample_clip()).values())
    assert driver.started == expected
    widget = driver.widget
    assert widget.session is not None and len(widget.session.objects) == len(expected)
    labels = [layer for layer in viewer.layers if layer.__class__.__name__ == "Labels"]
    assert labels and np.asarray(labels[0].data).shape == sample_clip().labels.shape
