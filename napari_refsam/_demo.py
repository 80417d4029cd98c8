"""The viewer half of ``refsam demo``: napari with the sample video, the RefSAM widget and a model.

Kept in the plugin package because src_model never imports Qt or napari; the headless half and
the sample itself live in ``src_model.commands.demo``.
"""
from __future__ import annotations

from src_model.commands.demo import sample_clip, sample_expressions


class DemoDriver:
    """Feeds the sample expressions to the RefSAM widget one at a time (it runs one job at a time)."""

    def __init__(self, widget, texts: list[str]) -> None:
        from qtpy.QtCore import QTimer

        self.widget, self.queue, self.started = widget, list(texts), []
        self.timer = QTimer()
        self.timer.timeout.connect(self.step)
        self.timer.start(200)

    @property
    def done(self) -> bool:
        return not self.queue and not self.widget.is_busy

    def step(self) -> None:
        if self.widget.is_busy:
            return
        if not self.queue:
            self.timer.stop()
            return
        text = self.queue.pop(0)
        self.started.append(text)
        self.widget.segment(text)


def open_demo(viewer, model) -> DemoDriver:
    """Put the sample video, the RefSAM dock widget and ``model`` into ``viewer``; start segmenting."""
    viewer.open_sample("napari-refsam", "synthetic_referring_video")
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.set_model(model)
    return DemoDriver(widget, list(sample_expressions(sample_clip()).values()))


def run_gui(model) -> int:
    """napari with the sample, the RefSAM dock widget and ``model``; segments each expression."""
    import napari

    viewer = napari.Viewer(title="RefSAM demo")
    driver = open_demo(viewer, model)  # holds the timer that feeds the expressions
    napari.run()
    driver.timer.stop()
    return 0
