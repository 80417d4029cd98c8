"""Letting go of sessions: when their video layer is removed, and when the viewer or widget closes.

``SessionLifetime`` is mixed into ``RefSAMWidget`` (before ``SessionView``). A session is let go
by closing it (``VideoSession.close``: its prefetch thread and files end). An idle session was
autosaved after its last change, so it is closed at once. A session a job is working on is let
go through the job's token (``CancelToken.release``): the run is cancelled (each frame stays
wholly old or wholly new), and once it stops the worker thread autosaves and closes the session,
whether or not the widget still exists by then. When the viewer or the widget closes, the GUI
waits up to ``close_wait_s`` for that to finish. A session of a video with no autosave place (an
in-memory array, no Autosave-to folder) is saved under the cache folder when let go, and the
user is told where: closing the dock or removing the video never throws work away. A closed
widget stops listening to the viewer, and its labels layer is locked (no stroke on it is lost).
"""
from __future__ import annotations

import contextlib
import weakref

from napari.utils.notifications import show_warning
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QMainWindow

from ._autosave import let_go_path, save_session


def _name(layer) -> str:
    return getattr(layer, "name", None) or "video"


class SessionLifetime:
    close_wait_s = 5.0  # how long closing the viewer waits for a running job to stop and save
    closed = False  # shut down: the widget no longer acts on anything

    _watched = None          # weakref to the main window whose closing this widget watches
    _window_closing = False  # between a click on the window's close button and its outcome

    def _start(self, *args, **kwargs) -> bool:
        self._watch_window()  # sessions come from jobs: from the first one on, closing matters
        return super()._start(*args, **kwargs)

    def _watch_window(self) -> None:
        """Learn when the napari window holding this dock widget closes (an event filter on it:
        napari has no close event). Nothing to watch for a widget outside a main window."""
        window = self.parentWidget()
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is not None and (self._watched is None or self._watched() is not window):
            window.installEventFilter(self)
            self.installEventFilter(self)  # and being taken out of it (the dock's close button)
            self._watched = weakref.ref(window)  # not a reference: napari deletes its window

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if obj is self:
            if kind == QEvent.Type.ParentChange and self.parentWidget() is None:
                self.shutdown()  # napari's remove_dock_widget: this widget is done
        elif kind == QEvent.Type.Close:
            if event.spontaneous():
                # The user's click: napari may still ask and refuse. Accepted, the window hides
                # right away, within this same close; refused, the flag is gone on the next turn.
                self._window_closing = True
                QTimer.singleShot(0, self._close_refused)
            else:  # viewer.close() / Window.close(): napari has already asked if it had to
                self.shutdown()
        elif kind == QEvent.Type.Hide and self._window_closing:
            self.shutdown()
        return False

    def _close_refused(self) -> None:
        self._window_closing = False

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Let go of every session (the viewer or this widget is closing): cancel a running job,
        wait briefly for it to stop and be autosaved, close all sessions. The widget then stops
        listening to the viewer: a closed dock must not offer restores or take strokes."""
        self._window_closing = False
        if self.closed:
            return
        self.closed = True
        self._disconnect_viewer()
        self._pending_restore = None  # a restore waiting for a model: not for a closed dock
        token, result = self._token, self._result
        if token is not None and token.video is not None:
            token.release(self._let_go_path(token.video, running=True), result)
        layers = {id(layer): layer for layer in self.viewer.layers}
        session, layer = self.session, self.video_layer
        if self.labels_layer is not None:
            self.labels_layer.editable = False  # nothing records strokes on it any more
        self._forget_session()
        if session is not None:
            self._close_session(session, layer)
        for key in list(self._parked):
            self._close_session(self._parked.pop(key)[0], layers.get(key))
        if token is not None and token.released:  # (a model still loading is left to finish)
            result.done.wait(self.close_wait_s)

    # ----------------------------------------------------------------------------- layers
    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.labels_layer:
            self._unwatch_labels(layer)
            self.labels_layer = None  # recreated from the session on the next run
        if layer is self.video_layer:
            session = self.session
            self._forget_session()
            if session is not None:
                self._close_session(session, layer)
        parked = self._parked.pop(id(layer), None)
        if parked is not None:
            self._close_session(parked[0], layer)
        token = self._token
        # also a first run, still making its session
        if token is not None and token.video is layer and not token.released:
            token.release(self._let_go_path(layer, running=True), self._result)
            self.status.setText("The video layer was removed: stopping the run…")
        self._refresh_layer_choices()

    def _close_session(self, session, layer) -> None:
        token = self._token
        if token is not None and token.holds(session):
            if not token.released:  # cancelled now, saved and closed when it stops
                token.release(self._let_go_path(layer, running=True), self._result)
            return
        if self.autosave_file(layer) is None and session.objects:  # else autosaved after its last change
            path = self._let_go_path(layer)
            try:
                save_session(session, path)
            except Exception as exc:  # noqa: BLE001 - said; closing goes on
                show_warning(f"RefSAM: the session of “{_name(layer)}” could not be saved to {path}: {exc}")
        session.close()

    def _let_go_path(self, layer, running: bool = False):
        """Where a session let go is saved: its autosave file, else (a video with no autosave
        place) a dated file under the cache folder, said in a warning; offered back when the
        dock opens again, and Restore… brings it back too."""
        path = self.autosave_file(layer) if layer is not None else None
        if path is not None or layer is None:
            return path
        path = let_go_path(_name(layer))
        when = "once its run has stopped" if running else "now"
        show_warning(f"RefSAM: “{_name(layer)}” has no file to autosave next to, nor an Autosave-to folder: "
                     f"its session is saved {when} to {path} (Restore… brings it back).")
        return path

    def _disconnect_viewer(self) -> None:
        layers = self.viewer.layers.events
        for emitter, slot in ((layers.inserted, self._on_layer_inserted), (layers.removed, self._on_layer_removed),
                              (self.viewer.dims.events.current_step, self._update_frame_label)):
            with contextlib.suppress(Exception):  # (already gone with the viewer)
                emitter.disconnect(slot)

    def _forget_session(self) -> None:
        """The widget stops showing a session (it is parked or let go by the caller)."""
        self._settle_pending_paint()  # strokes not yet applied go into it first
        if self.labels_layer is not None:
            self._unwatch_labels(self.labels_layer)
        self.session = self.labels_layer = self.video_layer = None
        self._keyframes = {}
        self._pending_paint = set()
        self.objects.update_objects({}, {})
        self._update_frame_label()
        self._set_busy(self._worker is not None)
