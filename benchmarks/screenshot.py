"""Screenshot of the RefSAM plugin at work: docs/screenshot.png.

    QT_QPA_PLATFORM=offscreen xvfb-run -a python benchmarks/screenshot.py [--model default|tiny] [-o PATH]

Opens the synthetic sample clip as an mp4 through the plugin's reader, docks the RefSAM widget,
segments one of the clip's expressions with the bundled default model (a random tiny model with
--model tiny, or when the default is not installed), paints a correction on one frame and
re-propagates, then saves the whole window.

napari's own screenshot is black under offscreen Qt, so the canvas is rendered by vispy
(``SceneCanvas.render()``) and painted over its place in the Qt window grab.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def wait(app, condition, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the RefSAM job did not finish in time")
        app.processEvents()
        time.sleep(0.01)


def load_model(which: str):
    from src_model.errors import CheckpointError
    from src_model.weights import load_refsam

    if which == "default":
        try:
            return load_refsam("default", device="cpu"), "bundled default model"
        except CheckpointError as exc:
            print(f"default model unavailable ({exc}); using a random tiny model", file=sys.stderr)
    return load_refsam(None, preset="tiny", device="cpu"), "random tiny model"


def grab_window(viewer):
    """The window as a QImage, with the vispy canvas rendered into its place."""
    from qtpy.QtCore import QPoint, QRect
    from qtpy.QtGui import QImage, QPainter

    window = viewer.window._qt_window
    shot = window.grab().toImage()
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    rgba = scene.render(alpha=True)  # (h, w, 4) uint8, physical pixels
    height, width = rgba.shape[:2]
    canvas = QImage(rgba.tobytes(), width, height, 4 * width, QImage.Format.Format_RGBA8888).copy()
    native = scene.native
    top_left = native.mapTo(window, QPoint(0, 0))
    ratio = shot.devicePixelRatio() or 1.0
    target = QRect(int(top_left.x() * ratio), int(top_left.y() * ratio),
                   int(native.width() * ratio), int(native.height() * ratio))
    painter = QPainter(shot)
    painter.drawImage(target, canvas)
    painter.end()
    return shot


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "tiny"), default="default")
    parser.add_argument("-o", "--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"))
    parser.add_argument("--size", default="1400x860", help="window size WxH")
    parser.add_argument("--objects", default="2,3",
                        help="sample objects whose first expression is segmented (comma separated ids)")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_refsam._sample_data import make_sample_data
    from napari_refsam._reader import EXPRESSIONS_KEY
    from src_model.video.source import write_video

    (frames, meta, _), = make_sample_data()
    expressions = meta["metadata"][EXPRESSIONS_KEY]
    workdir = Path(tempfile.mkdtemp(prefix="refsam-screenshot-"))
    video = write_video(workdir / "synthetic_clip.mp4", frames, fps=8)

    viewer = napari.Viewer(title="napari-refsam", show=True)
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)
    app = QApplication.instance()
    viewer.open(str(video), plugin="napari-refsam")
    _, widget = viewer.window.add_plugin_dock_widget("napari-refsam", "RefSAM")
    widget.auto_restore = False
    model, model_name = load_model(args.model)
    widget.set_model(model)

    texts = [expressions[int(i)][0] for i in args.objects.split(",")]
    for text in texts:
        widget.expression.setText(text)
        widget.segment()
        wait(app, lambda: not widget.is_busy)

    # A correction: paint on a middle frame of object 1, then re-propagate from it.
    layer = widget.labels_layer
    k = len(frames) // 2
    viewer.dims.set_current_step(0, k)
    mask = np.asarray(layer.data[k]) == 1
    if mask.any():  # a stroke over the object's right edge, so it changes pixels
        ys, xs = np.nonzero(mask)
        y, x = float(ys[xs.argmax()]), float(xs.max()) + 2
    else:
        y, x = frames.shape[1] / 2, frames.shape[2] / 2
    layer.brush_size = 10
    layer.paint((k, y, x), 1)
    wait(app, lambda: not widget.is_busy)
    widget.repropagate(k)
    wait(app, lambda: not widget.is_busy)
    widget.status.setText(f"{model_name}: {len(texts)} expressions segmented, object 1 corrected on "
                          f"frame {k} and re-propagated.")
    viewer.layers.selection.active = layer
    viewer.reset_view()
    for _ in range(20):  # let the canvas and the dock settle
        app.processEvents()
        time.sleep(0.02)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = grab_window(viewer)
    if not image.save(str(out)):
        print(f"could not write {out}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({image.width()}x{image.height()}); expressions: {texts}; {model_name}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
