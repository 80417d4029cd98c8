"""Paint strokes on the RefSAM labels layer becoming corrections (the GUI-thread side).

``PaintCorrections`` is mixed into ``RefSAMWidget`` (before ``SessionView``, whose job machinery
and labels mirroring it uses). napari emits ``paint`` once per committed edit; the stroke is read
from napari's history item (``_corrections.stroke_changes``) and applied on the next turn of the
event loop, or after the running job: the painted pixels become keyframes of the objects they
touched, re-propagated if the auto option is on.
"""
from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer

from . import _jobs
from ._autosave import save_session
from ._corrections import apply_as_one_step, frame_diff, painted_frames, stroke_changes, strokes_applier, take_all
from ._session_view import describe_error


class PaintCorrections:
    def _on_paint(self, event) -> None:
        # No session yet (the layer was made by a run that failed, or by "Add from prompts" with
        # nothing to add): painted labels start one, as new objects (``apply_corrections``).
        if self.labels_layer is None or (self.session is None and self.video_layer is None):
            return
        shape = self.labels_layer.data.shape
        stroke = stroke_changes(event.value, shape) if len(shape) == 3 else None
        if stroke:
            frames = set(stroke)
        else:  # an edit we cannot read: the frames' difference with the session, when applied
            stroke = frames = painted_frames(event.value, shape[0]) or {self._current_frame()}
        self._strokes.append(stroke)
        # napari may emit ``paint`` before it writes the pixels, so the stroke is applied on the next
        # turn of the event loop. A running job must not overwrite these frames in the layer until then.
        self._pending_paint |= frames
        if self._live is not None:
            self._live.skip |= frames
        token = self._token
        if token is not None and token.before_save is None and token.holds(self.session):
            token.before_save = strokes_applier(self._strokes)  # if the run is let go before it ends
        if self._worker is not None:
            self.status.setText(f"Correction on frame(s) {sorted(frames)} noted; applied after this run.")
            return
        QTimer.singleShot(0, self._apply_pending_paint)

    def _apply_pending_paint(self) -> None:
        if self._worker is None and (self._pending_paint or self._strokes):
            frames, self._pending_paint = self._pending_paint, set()
            strokes = take_all(self._strokes)
            if not self.apply_corrections(strokes) and self.session is not None and self.labels_layer is not None:
                self._sync(sorted(frames))  # nothing to correct: the layer shows the session again

    def _readable(self, strokes) -> list:
        """The strokes as stroke_changes dicts: unreadable ones become the layer's difference."""
        out = []
        for stroke in strokes:
            if not isinstance(stroke, dict):
                stroke = {t: frame_diff(self.labels_layer.data[t], self._session_frame(t)) for t in sorted(stroke)}
                stroke = {t: change for t, change in stroke.items() if change[0].any()}
            if stroke:
                out.append(stroke)
        return out

    def _session_frame(self, t: int):
        session = self.session
        return session.labels[t] if session is not None else np.zeros(self.labels_layer.data.shape[1:], np.uint8)

    def apply_corrections(self, strokes) -> bool:
        """Make painted pixels keyframes of the objects the strokes touched (one undo step). With
        no session yet, the video's session is made first: painted labels become its objects."""
        if self.labels_layer is None or (self.session is None and self.video_layer is None):
            return False
        strokes = self._readable(strokes)
        if not strokes:
            return False
        if self.session is None and self.model is None:
            show_warning("RefSAM: load a model to propagate the painted mask (Model → Load model), then paint again.")
            return False
        session, direction, save_to = self.session, self.direction.currentText(), self.autosave_file()
        auto = self.auto_repropagate.isChecked()
        model, video = self.model, self._video_of(self.video_layer) if session is None else None
        return self._start("applying the correction", lambda token: _jobs.correct(
            session, strokes, token, direction, auto, save_to, model=model, video=video),
            on_done=self._after_correction)

    def _after_correction(self, result) -> None:
        """A painted label no object had became a new object: the brush now paints that object, so
        the next stroke with it extends the same object instead of making another."""
        new_ids = result.value or {}
        layer = self.labels_layer
        if not new_ids or layer is None:
            return
        text = ", ".join(f"label {label} became object {obj}" for label, obj in new_ids.items())
        if int(layer.selected_label) in new_ids:
            obj = new_ids[int(layer.selected_label)]
            layer.selected_label = obj
            text += f"; the brush now paints object {obj}"
        self.status.setText(f"Correction applied: {text}.")

    def _settle_pending_paint(self) -> None:
        """The session is about to be let go (parked, closed, the viewer closing): strokes not yet
        applied go into it now, and it is autosaved. A run holding the session has them in its
        token instead: applied once it stops, before its autosave."""
        session, token = self.session, self._token
        if token is not None and (token.holds(session) or token.released):
            return  # the run's token applies them (it shares self._strokes, and takes what it applies)
        strokes = take_all(self._strokes)
        if not strokes or session is None or self.labels_layer is None:
            return
        try:
            strokes = self._readable(strokes)
            if strokes:
                apply_as_one_step(session, strokes)
                path = self.autosave_file()
                if path is not None:
                    save_session(session, path)
        except Exception as exc:  # noqa: BLE001
            show_warning(describe_error("applying the last paint stroke", exc))
