"""The viewer stays responsive while frames propagate in the worker thread."""
from __future__ import annotations

import time

import pytest
from qtpy.QtCore import QTimer

from refsam_napari_helpers import TEXT, open_with_widget, wait_idle

pytestmark = pytest.mark.gui


def test_event_loop_never_waits_200ms(make_napari_viewer, qtbot, long_mp4, tiny_model):
    viewer = make_napari_viewer(show=True)
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    gaps, frames = [], []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    assert widget.segment(TEXT)
    widget._worker.yielded.connect(lambda item: item[0] == "frame" and frames.append(item[1]))
    last[0] = time.perf_counter()
    timer.start()
    wait_idle(qtbot, widget)
    timer.stop()
    assert sorted(frames) == list(range(50))
    print("GAPS", [(i, round(g, 3)) for i, g in enumerate(gaps) if g > 0.05])
    worst = max(gaps)
    print(f"{len(gaps)} timer ticks, worst gap {worst * 1000:.0f} ms")
    assert worst < 0.2, f"the event loop was blocked for {worst * 1000:.0f} ms"
