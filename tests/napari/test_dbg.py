import time
from qtpy.QtCore import QTimer
from refsam_napari_helpers import TEXT, open_with_widget, wait_idle
import vispy.scene.canvas as vc

def test_dbg(make_napari_viewer, qtbot, long_mp4, tiny_model, monkeypatch):
    viewer = make_napari_viewer(show=True)
    widget = open_with_widget(viewer, long_mp4, tiny_model)
    spans = []
    def timed(obj, name):
        orig = getattr(obj, name)
        def wrapper(*a, **k):
            t = time.perf_counter(); r = orig(*a, **k); spans.append((name, round(t - t0, 3), round(time.perf_counter() - t, 3))); return r
        monkeypatch.setattr(obj, name, wrapper)
    t0 = time.perf_counter()
    timed(vc.SceneCanvas, "_draw_scene")
    timed(widget, "_on_yield")
    timed(widget, "_adopt_session")
    gaps = []
    last = [0]
    def tick():
        now = time.perf_counter(); gaps.append((round(last[0]-t0,3), round(now-last[0],3))); last[0] = now
    timer = QTimer(); timer.setInterval(10); timer.timeout.connect(tick)
    t0 = time.perf_counter()
    assert widget.segment(TEXT)
    print("segment() took", round(time.perf_counter() - t0, 3))
    last[0] = time.perf_counter()
    timer.start()
    wait_idle(qtbot, widget)
    timer.stop()
    print("GAPS", [g for g in gaps if g[1] > 0.05])
    print("SPANS", [s for s in spans if s[2] > 0.02][:20])
