"""The GUI-thread half of the widget: running jobs, and mirroring the session in a Labels layer.

``SessionView`` is mixed into ``RefSAMWidget``. It expects the widget to provide ``viewer``,
``session``, ``video_layer``, ``labels_layer``, the ``objects`` table, ``status``, ``progress``,
``frame_label``, ``direction`` and ``auto_repropagate`` widgets, ``_set_busy(bool)`` and
``autosave_file()``.

The Labels layer holds its own copy of the session's labels. The engine writes its copy in the
worker thread while the user may paint on the layer's copy. A paint stroke is read from napari's
history item (which pixels it changed, to what); its pixels are applied onto the session's frame
as it is when the stroke is applied, which during a run is after the run (see ``_corrections``).
After every job the frames it touched are copied back from the session.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from app_model.types import KeyCode, KeyMod
from napari.utils.notifications import show_error, show_warning

from ._objects import keyframe_note
from ._autosave import cache_dir
from ._reader import EXPRESSIONS_KEY, NAME_KEY, SOURCE_KEY, VIDEO_SOURCE_KEY
from ._workers import CancelToken, JobResult, LiveLabels, run_job

LABELS_NAME = "RefSAM labels"
# The layer's copy of the labels lives in an unnamed file above this size, so a long video's
# labels are not held twice in RAM (the session's own store goes to disk above 2 GiB).
LAYER_MEMMAP_BYTES = 512 << 20
VIDEO_LAYER_KEY = "refsam_video_layer"  # on a labels layer: unique_id of the video layer it was made for
UNDO_KEY = KeyMod.CtrlCmd | KeyCode.KeyZ  # Ctrl+Z, Cmd+Z on macOS: napari's own Labels undo key
log = logging.getLogger(__name__)


def describe_error(action: str, exc: BaseException) -> str:
    """A one-line message for the notification: ours name the problem, OOM gets advice."""
    from src_model.errors import RefSAMError

    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return (f"Out of memory while {action}. Try device 'cpu', a smaller model, or a shorter video; "
                "everything done so far is kept.")
    if isinstance(exc, (RefSAMError, OSError, ValueError)):
        return f"RefSAM: error while {action}: {text}"
    log.error("RefSAM: unexpected error while %s", action, exc_info=exc)
    return f"RefSAM: unexpected error while {action}: {type(exc).__name__}: {text}"


def layer_array(shape, dtype) -> np.ndarray:
    """Zeros for the labels layer: in memory, or above LAYER_MEMMAP_BYTES a memmap of an unnamed
    file (the system deletes it when the layer lets go of the array; the page cache, not the
    process, holds what napari is not looking at). napari paints and slices it like any array.
    The file's blocks are reserved up front where the system can, so a full disk falls back to
    memory here instead of killing napari with SIGBUS on a later write."""
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes <= LAYER_MEMMAP_BYTES:
        return np.zeros(shape, dtype)
    try:
        with tempfile.TemporaryFile(prefix="refsam-layer-", dir=cache_dir()) as handle:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, nbytes)
            return np.memmap(handle, dtype=dtype, mode="w+", shape=shape)  # the mapping outlives the handle
    except OSError as exc:
        log.warning("RefSAM: labels layer kept in memory (no file-backed copy: %s)", exc)
        return np.zeros(shape, dtype)


class SessionView:
    refresh_interval = 0.1  # s between Labels refreshes while frames stream in

    def _init_session_view(self) -> None:
        self.session = None
        self.labels_layer = None
        self._worker = self._token = self._result = self._live = None
        self._pending_paint: set[int] = set()  # painted frames not yet turned into corrections
        self._strokes: list = []  # their strokes, in order: stroke_changes dicts (a set of frames if unreadable)
        self._keyframes: dict = {}             # snapshot for the frame display (read on the GUI thread)

    # ---------------------------------------------------------------------------------- jobs
    @property
    def is_busy(self) -> bool:
        """A job runs, or a paint stroke waits to become a correction."""
        return self._worker is not None or bool(self._pending_paint)

    def _refuse_if_busy(self) -> bool:
        if self._worker is not None and self._token is not None and self._token.cancelled:
            show_warning("RefSAM is still stopping the cancelled run; try again in a moment.")
        elif self._worker is not None:
            show_warning("RefSAM is busy; wait for the current run or press Cancel.")
        return self._worker is not None

    def _start(self, action: str, make_body, on_done=None, uses_video: bool = True, on_error=None,
               on_end=None) -> bool:
        """Run ``make_body(token)`` (a ``_jobs`` generator) in a thread worker; ``on_done(result)``
        after it succeeds, ``on_error(result)`` after the error is shown, ``on_end(result)`` after
        either or a cancel (not when its video was closed).

        uses_video: the job works on the session of ``video_layer`` (or makes it); removing that
        layer releases the job (``_lifetime``). False for jobs that leave the session alone.
        """
        if self._refuse_if_busy():
            return False
        if uses_video and self.session is not None and (self.labels_layer is None
                                                         or self.labels_layer not in self.viewer.layers):
            self._adopt_session(self.session)  # its labels layer was deleted: a new one, filled from the session
        token, result = CancelToken(), JobResult()
        if uses_video:
            token.session, token.video = self.session, self.video_layer
        self._token, self._result = token, result
        self._live = LiveLabels(self.labels_layer, self._current_frame, self.refresh_interval,
                                skip=self._pending_paint)
        total = self.video_layer.data.shape[0] if self.video_layer is not None else 0
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(0)
        worker = run_job(make_body(token), result, token)
        worker.yielded.connect(self._on_yield)
        worker.finished.connect(lambda: self._finish_if_alive(action, result, (on_done, on_error, on_end)))
        self._worker = worker
        self._set_busy(True)
        self.status.setText(f"{action[0].upper()}{action[1:]}…")
        worker.start()
        return True

    def _on_yield(self, item) -> None:
        kind = item[0]
        if self._token is not None and self._token.released and kind != "warning":
            return  # its video is gone: the worker saves and closes the session, nothing to show
        if kind == "frame":
            self._live.put(item[1], item[2])
            self.progress.setValue(min(self.progress.maximum(), self.progress.value() + 1))
        elif kind == "session":
            self._adopt_session(item[1])
            self._token.session = item[1]
            self._live.layer = self.labels_layer
            if item[1].model is not self.model:  # a session moved to another model: the widget's now
                self._take_model(item[1].model)
        elif kind == "status":
            self.status.setText(item[1])
        elif kind == "progress":  # frames done by a job that shows no labels (an export)
            self.progress.setValue(min(self.progress.maximum(), int(item[1])))
        elif kind == "warning":
            show_warning(item[1])

    def _finish_if_alive(self, action: str, result: JobResult, callbacks) -> None:
        try:
            self._finish(action, result, *callbacks)
        except RuntimeError as exc:  # the viewer (and this widget) closed while the job ran
            if "has been deleted" not in str(exc):
                raise

    def _finish(self, action: str, result: JobResult, on_done, on_error, on_end) -> None:
        self._worker = self._token = self._result = None
        self._live.flush()
        self._live.close()
        self._live = None
        if self.session is not None and self.labels_layer is not None:
            self._sync(sorted(result.frames - self._pending_paint))
        self.progress.setValue(self.progress.maximum() if not result.cancelled else self.progress.value())
        cancelled = "Cancelled; frames done so far are kept." if result.frames else "Cancelled."
        self.status.setText(cancelled if result.cancelled else
                            ("Failed; nothing was lost." if result.error is not None else "Done."))
        if result.released:
            saved = f"saved to {result.saved} and " if result.saved else ""
            self.status.setText(f"The video was closed: the run stopped; its session was {saved}closed.")
        if result.warning is not None:
            show_warning(result.warning)
        try:
            if result.error is not None:
                show_error(describe_error(action, result.error))
                if on_error is not None:
                    on_error(result)
            elif on_done is not None and not result.cancelled:
                on_done(result)  # after the generic status, so its own message (and next job) win
            if on_end is not None and not result.released:
                on_end(result)
        except Exception as exc:  # noqa: BLE001 - a follow-up step failed: said, and the widget stays usable
            show_error(describe_error(f"finishing {action}", exc))
        self._set_busy(self._worker is not None)  # on_done may have started the next job
        self._update_objects()
        self._apply_pending_paint()
        if not result.released:
            self._follow_pick()

    # ------------------------------------------------------------------------ labels <-> session
    def _ensure_labels_layer(self, shape, labels=None) -> None:
        """Create the Labels layer before a session exists, on the GUI thread.

        Creating the first Labels layer of a napari process is slow (seconds: pandas import,
        vispy visuals); doing it when the user clicks rather than when the first frame arrives keeps
        that cost out of the propagation, during which the event loop must stay free.
        """
        layer = self.labels_layer
        if layer is not None and layer in self.viewer.layers and layer.data.shape == tuple(shape):
            return
        video = self.video_layer
        earlier = self._earlier_labels_layer(shape, labels)
        if earlier is not None:
            earlier.editable = True
            self._watch_labels(earlier)
            self.labels_layer = earlier
            return
        placement = {}
        if video is not None and video.ndim in (len(shape), len(shape) - 1):  # overlay the video exactly
            pad = len(shape) - video.ndim  # 1: a single image, shown as a one-frame labels stack
            placement = {"scale": (1.0,) * pad + tuple(video.scale),
                         "translate": (0.0,) * pad + tuple(video.translate)}
            if not pad and getattr(video, "axis_labels", None) is not None:
                placement["axis_labels"] = video.axis_labels
        added = self.viewer.add_labels(layer_array(shape, np.uint16), name=LABELS_NAME, **placement)
        # The layer list's own object, not the plugin proxy add_labels returns: removal events carry
        # the former, and ``is`` must recognise it.
        layer = next((x for x in self.viewer.layers if x == added), added)
        if video is not None:
            layer.metadata[VIDEO_LAYER_KEY] = video.unique_id
        self._watch_labels(layer)
        self.labels_layer = layer

    def _earlier_labels_layer(self, shape, labels):
        """The labels layer an earlier RefSAM widget made for this video and let go (the dock was
        closed and opened again), when it shows exactly ``labels`` (a restored session's): the
        session goes back into it rather than into a second layer. A layer showing anything else
        (strokes made while no widget watched it) is left as it is."""
        video = self.video_layer
        if labels is None or video is None:
            return None
        held = {id(pair[1]) for pair in self._parked.values()}
        for layer in reversed(self.viewer.layers):
            if (layer.metadata.get(VIDEO_LAYER_KEY) == video.unique_id and id(layer) not in held
                    and getattr(layer, "data", None) is not None and layer.data.shape == tuple(shape)
                    and layer.data.dtype == labels.dtype and _same_frames(layer.data, labels)):
                return layer
        return None

    def _watch_labels(self, layer) -> None:
        """Paint strokes on ``layer`` become corrections, and Ctrl+Z on it undoes the session's last
        edit (a correction or a propagation), restoring the layer's frames from the session.

        napari's own Labels undo would revert the stroke's pixels in the layer only, without a paint
        event: the session would keep the correction and its re-propagation, and the next sync would
        bring the stroke back. One history, the session's, keeps the two in step.
        """
        layer.events.paint.connect(self._on_paint)
        layer.bind_key(UNDO_KEY, self._undo_key, overwrite=True)

    def _unwatch_labels(self, layer) -> None:
        layer.events.paint.disconnect(self._on_paint)
        layer.bind_key(UNDO_KEY, None)  # back to napari's own undo for this layer

    def _undo_key(self, layer) -> None:
        self.undo()

    def _adopt_session(self, session) -> None:
        self.session = session
        self._ensure_labels_layer(session.labels.shape, session.labels)
        layer = self.labels_layer
        data = layer.data
        if data.dtype != session.labels.dtype:  # ids past 65535 (uint32): a new array, handed over filled
            data = layer_array(session.labels.shape, session.labels.dtype)
        for t in range(len(session.labels)):  # the layer's own copy (see the module docstring)
            data[t] = session.labels[t]
        if data is layer.data:
            layer.refresh()
        else:
            layer.data = data
        self.viewer.layers.selection.active = layer
        self._update_objects()

    def _sync(self, frames) -> None:
        for t in frames:
            self.labels_layer.data[t] = self.session.labels[t]
        if len(frames):
            self.labels_layer.refresh()

    def _sync_all(self) -> None:
        if self.labels_layer is None:
            return
        data, labels = self.labels_layer.data, self.session.labels
        self._sync([t for t in range(len(labels)) if not np.array_equal(data[t], labels[t])])
        self._update_objects()

    def _update_objects(self) -> None:
        session = self.session
        if session is None:
            return
        self._keyframes = {int(k): list(v) for k, v in session.keyframes.items()}
        color_of = self.labels_layer.get_color if self.labels_layer is not None else None
        self.objects.update_objects(session.objects, self._keyframes, color_of)
        if self.labels_layer is not None:
            texts = {int(k): [info["text"]] for k, info in session.objects.items() if info.get("text")}
            self.labels_layer.metadata[EXPRESSIONS_KEY] = texts
            self.labels_layer.metadata[NAME_KEY] = (self.video_layer.metadata.get(NAME_KEY)
                                                    or self.video_layer.name)
            self.labels_layer.metadata[VIDEO_SOURCE_KEY] = self.video_layer.metadata.get(SOURCE_KEY)
        self._update_frame_label()
        self._set_busy(self._worker is not None)  # undo / re-propagate / remove follow the session

    def _current_frame(self) -> int:
        """The frame of the video shown now: its own index, through its scale and translate (the
        viewer's step counts in the finest time step of all layers)."""
        layer = self.video_layer or self.selected_layer()
        if layer is None or layer not in self.viewer.layers:
            return int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim else 0
        if layer.ndim < 3:  # a single image: one frame
            return 0
        world = np.asarray(self.viewer.dims.point, dtype=float)[-layer.ndim:]
        t = float(np.asarray(layer.world_to_data(world))[0])
        return int(min(max(round(t), 0), layer.data.shape[0] - 1))

    def _update_frame_label(self, *_) -> None:
        frame = self._current_frame()
        text = keyframe_note(frame, self._keyframes) if self.session is not None else ""
        self.frame_label.setText(text)
        # On the canvas only on keyframes: that is when it says something the dims slider does not.
        on_keyframe = any(frame in frames for frames in self._keyframes.values())
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.9; text_overlay before that
        overlay = canvas.overlays.text if canvas is not None else self.viewer.text_overlay
        overlay.text = text if on_keyframe else ""
        overlay.visible = on_keyframe and self.session is not None


def _same_frames(a, b) -> bool:
    """Frame by frame, stopping at the first difference: this runs on the GUI thread, and a whole
    long video compared at once would also need a video-sized boolean array."""
    return all(np.array_equal(a[t], b[t]) for t in range(len(a)))
