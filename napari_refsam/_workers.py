"""Background work for the widget: one napari ``thread_worker`` generator runs every job.

A job body is a generator that runs in the worker thread and touches only the engine (model,
VideoSession), never Qt or napari. It yields ``("frame", t, labels_frame)`` as propagation goes
and ``("status", text)`` for long steps; its return value ends up in ``JobResult.value``. Errors
are caught in the thread and handed back in ``JobResult.error``, so the widget shows them as
notifications instead of napari's traceback dialog, and the worker always finishes normally.

A job can be *released* (``CancelToken.release``: its video layer or the viewer went away): it is
cancelled, and when it stops the worker thread itself autosaves and closes its session, so this
happens even if the widget is gone by then.

``LiveLabels`` puts yielded frames into the Labels layer on the GUI thread with throttled
refreshes, which keeps the event loop free while dozens of frames a second arrive.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer

from ._autosave import save_session

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    value: object = None
    error: BaseException | None = None
    cancelled: bool = False
    frames: set = field(default_factory=set)  # frames yielded (whose labels may have changed)
    objects: list = field(default_factory=list)  # ids of the objects the job added, in order
    saved: str | None = None     # where the job's own autosave went (its last step)
    released: bool = False       # the session was let go: autosaved and closed after the job
    warning: str | None = None   # a non-fatal failure while letting it go
    done: threading.Event = field(default_factory=threading.Event)  # set once the worker is finished


class CancelToken:
    """Set from the GUI thread; job bodies check it between frames and between steps."""

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.video = None           # the video layer whose session the job works on (GUI thread only)
        self._sessions: list = []   # every session the job worked on (a model switch makes a second)
        self._release = None        # (autosave path or None,) once released
        self._ended = False
        # Called with the session once a released job has stopped, before the autosave (in the
        # worker thread): paint strokes still waiting for the run go in; True if it changed it.
        self.before_save = None

    @property
    def session(self):
        """The session whose propagation to stop, once the job has (or made) one."""
        return self._sessions[-1] if self._sessions else None

    @session.setter
    def session(self, session) -> None:
        with self._lock:
            if session is not None and not any(s is session for s in self._sessions):
                self._sessions.append(session)

    def holds(self, session) -> bool:
        return any(s is session for s in self._sessions)

    @property
    def released(self) -> bool:
        return self._release is not None

    def cancel(self) -> None:
        self._event.set()
        session = self.session
        if session is not None:
            session.cancel()  # the engine stops between two frames, leaving each wholly old or new

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def release(self, save_to, result: JobResult) -> None:
        """Cancel the job; once it has stopped, autosave its session to ``save_to`` (None: no
        autosave location) and close it. In the worker thread when the job is still running,
        here and now when it has just ended."""
        with self._lock:
            if self._release is not None:  # released already: that one stands
                return
            self._release = (save_to,)
            ended = self._ended
        self.cancel()
        if ended:
            self._let_go(result)

    def end(self, result: JobResult) -> None:
        """Called by the worker thread when the job body has returned (or failed)."""
        with self._lock:
            self._ended = True
            release = self._release is not None
        if release:
            self._let_go(result)

    def _let_go(self, result: JobResult) -> None:
        result.released = True
        with self._lock:  # the worker and the GUI thread may both get here: one of them closes
            (save_to,) = self._release
            sessions, self._sessions = self._sessions, []
        changed = False
        if sessions and self.before_save is not None:
            try:
                changed = bool(self.before_save(sessions[-1]))
            except Exception as exc:  # noqa: BLE001 - reported; the session is saved regardless
                log.warning("RefSAM: applying the pending paint strokes failed", exc_info=exc)
                result.warning = f"RefSAM: the paint strokes made during the run could not be applied: {exc}"
        if sessions and save_to is not None and (changed or result.saved != str(save_to)):
            try:
                save_session(sessions[-1], save_to)
                result.saved = str(save_to)
            except Exception as exc:  # noqa: BLE001 - reported; the session is closed regardless
                log.warning("RefSAM: autosave to %s failed", save_to, exc_info=exc)
                result.warning = f"RefSAM autosave to {save_to} failed: {exc}"
        for session in sessions:
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001 - never into napari's worker error dialog
                log.warning("RefSAM: closing the session failed", exc_info=exc)


@thread_worker
def run_job(body, result: JobResult, token: CancelToken):
    """Drive ``body`` (a generator) in a worker thread; return ``result`` filled in, never raise."""
    from src_model.errors import CancelledError

    try:
        while True:
            try:
                item = next(body)
            except StopIteration as stop:
                result.value = stop.value
                break
            if item[0] == "frame":
                result.frames.add(int(item[1]))
            elif item[0] == "session":
                token.session = item[1]
            elif item[0] == "saved":
                result.saved = item[1]
                continue
            elif item[0] == "object":
                result.objects.append(item[1])
            yield item
    except CancelledError:
        result.cancelled = True
    except Exception as exc:  # noqa: BLE001 - shown to the user by the widget
        result.error = exc
    finally:
        if token.cancelled:
            result.cancelled = True
        try:
            token.end(result)
        finally:
            result.done.set()
    return result


def propagate_frames(session, token: CancelToken, **kwargs):
    """Run ``session.propagate(**kwargs)`` to its end, yielding each frame as ("frame", t, labels).

    Cancelling goes through ``session.cancel()`` (see CancelToken), so the engine decides where to
    stop and keeps its labels consistent; we never abandon its generator half-way.
    """
    token.session = session
    if token.cancelled:
        return
    run = session.propagate(**kwargs)
    if token.cancelled:  # propagate() resets the engine's flag: a Cancel just now must survive that
        session.cancel()
    for t, labels_frame in run:
        yield ("frame", int(t), labels_frame)


class LiveLabels:
    """Copies yielded frames into a Labels layer; refreshes the view at most every ``interval`` s.

    A refresh re-slices and re-uploads the displayed frame, so it is needed only when the shown
    frame changed; other frames are read from the array when the user moves the slider.
    """

    def __init__(self, layer, current_frame, interval: float = 0.1, skip=()):
        self.layer = layer
        self._current = current_frame  # callable -> displayed frame index
        self.interval = interval
        self.skip = set(skip)           # frames the user is editing: never overwrite them
        self._last = 0.0
        self._dirty = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)

    def put(self, t: int, labels_frame) -> None:
        if t in self.skip or self.layer is None:
            return
        self.layer.data[t] = labels_frame
        if t == self._current():
            self._dirty = True
        elapsed = time.monotonic() - self._last
        if self._dirty:
            if elapsed >= self.interval:
                self.flush()
            elif not self._timer.isActive():
                # Trailing refresh, so the last frame of a burst is shown too.
                self._timer.start(int((self.interval - elapsed) * 1000) + 1)

    def flush(self) -> None:
        self._timer.stop()
        if self._dirty and self.layer is not None:
            self.layer.refresh()
        self._dirty = False
        self._last = time.monotonic()

    def close(self) -> None:
        self._timer.stop()
        self._timer.timeout.disconnect(self.flush)
