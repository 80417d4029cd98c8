"""The "RefSAM" dock widget: type an expression, watch the labels fill in, correct, re-propagate.

The widget is a shell around ``src_model.video.session.VideoSession``: each action becomes a job
(``_jobs``) run in a napari thread worker (``_workers``); the GUI thread only copies yielded frames
into the Labels layer, applies results and shows messages (``_session_view``); sessions are let go
(autosaved, closed) when their video layer is removed or the viewer closes (``_lifetime``). This
module holds the controls and the public actions, which scripts and tests call directly.
"""
from __future__ import annotations

from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCompleter, QWidget

from . import _jobs
from ._controls import build_controls
from ._dataset_export import DatasetExport
from ._lifetime import SessionLifetime
from ._objects import known_expressions
from ._paint import PaintCorrections
from ._prompts import add_clicks_layer, collect_prompts, consume, next_click_positive
from ._restore import SessionRestore
from ._reader import SOURCE_KEY
from ._session_view import LABELS_NAME, SessionView, describe_error

__all__ = ["RefSAMWidget", "LABELS_NAME", "describe_error"]


class RefSAMWidget(SessionLifetime, SessionRestore, PaintCorrections, DatasetExport, SessionView, QWidget):
    # None: ask with a dialog when a video has an autosave; True / False: answer without asking.
    auto_restore: bool | None = None
    _save_after_job = False  # (previous folder,): the Autosave-to folder changed during a run

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = None
        self.video_layer = None    # the Image layer the session segments
        self._init_session_view()  # session, labels_layer, job state
        self._pending_restore = None
        self._offered: set = set()  # autosaves already offered (asked once per file)
        self._retry_with_next_model: set = set()  # autosaves whose restore failed on the model in use
        self._told_not_autosaved: set = set()  # ids of video layers already said to have no autosave
        # Sessions of other video layers, kept while the user looks at another one (an in-memory
        # clip has no autosave to come back to): {id(image layer): (session, labels layer)}.
        self._parked: dict = {}
        self._build_ui()
        layers = self.viewer.layers.events
        layers.inserted.connect(self._on_layer_inserted)
        layers.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._update_frame_label)
        self._refresh_layer_choices(notify=False)  # no restore dialog from inside the constructor
        self.installEventFilter(self)  # taken out of its dock (closed): stop acting (``_lifetime``)
        # Deferred, so whoever created the widget can still set ``auto_restore`` first. A bound
        # method (not a lambda) so Qt drops the call if the widget is gone by then.
        QTimer.singleShot(0, self._offer_restore_for_selected)

    # ------------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        build_controls(self)
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        """Enable what can act now: nothing but Cancel while a job runs; otherwise re-propagate and
        undo only with something to act on, remove and correct only with an object selected."""
        session = self.session
        has_objects = session is not None and bool(session.objects)
        picked = session is not None and self.objects.selected_object() is not None
        for button, usable in ((self.segment_button, True), (self.prompts_button, True),
                               (self.model_panel.load_button, True), (self.restore_button, True),
                               (self.repropagate_button, has_objects), (self.export_button, has_objects),
                               (self.undo_button, session is not None and session.can_undo),
                               (self.remove_button, picked), (self.correct_button, picked)):
            button.setEnabled(usable and not busy)
        self.cancel_button.setEnabled(busy)

    def _refresh_buttons(self) -> None:
        self._set_busy(self._worker is not None)

    # ------------------------------------------------------------------------- video layers
    def selected_layer(self):
        return self.layer_combo.currentData()

    def _refresh_layer_choices(self, notify: bool = True) -> None:
        from napari.layers import Image

        current = self.selected_layer()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Image):
                self.layer_combo.addItem(layer.name, layer)
                layer.events.name.connect(self._rename_choices)  # (connecting again is a no-op)
        index = self.layer_combo.findData(current) if current is not None else -1
        self.layer_combo.setCurrentIndex(index if index >= 0 else self.layer_combo.count() - 1)
        self.layer_combo.blockSignals(False)
        self._offer_expressions()
        if notify and self.selected_layer() is not current:
            self._on_video_changed()

    def _on_layer_inserted(self, event) -> None:
        from napari.layers import Image

        self._refresh_layer_choices()
        # Not while a job runs: a first run's session is on its way, and is what the dock shows.
        if isinstance(event.value, Image) and self.session is None and self._worker is None:
            self.layer_combo.setCurrentIndex(self.layer_combo.findData(event.value))
            self._offer_restore(event.value)

    def _rename_choices(self, *_) -> None:
        for index in range(self.layer_combo.count()):
            self.layer_combo.setItemText(index, self.layer_combo.itemData(index).name)

    def _offer_expressions(self, *_) -> None:
        """The selected video's own expressions (the sample's, say) complete what is typed."""
        layer = self.selected_layer()
        completer = QCompleter(known_expressions(layer.metadata) if layer is not None else [], self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.expression.setCompleter(completer)

    def _on_video_changed(self, *_) -> None:
        if self._worker is not None:
            # The running job keeps its video (a first run's session may still be on its way): the
            # pick takes effect when the job ends (``_follow_pick``).
            return
        layer = self.selected_layer()
        if self.session is not None and layer is not self.video_layer:
            self._detach_session()
        if self.session is None and layer is not None and id(layer) in self._parked:
            self._use_video(layer)  # back to a video segmented earlier in this viewer
        else:
            self._offer_restore(layer)

    def _follow_pick(self) -> None:
        """After a job: a video picked while it ran becomes the one RefSAM works on, so the combo
        and what Undo / Re-propagate / Remove act on agree; a folder chosen meanwhile gets its saves."""
        if self._worker is None and self.selected_layer() is not self.video_layer:
            self._on_video_changed()
        if self._worker is None and self._save_after_job:
            self._save_where_autosaves_go(*self._save_after_job)

    def _detach_session(self) -> None:
        """Put the session aside (kept, and autosaved after every change); its layer stays too."""
        if self.session is not None and self.video_layer is not None:
            self._parked[id(self.video_layer)] = (self.session, self.labels_layer)
            if self.labels_layer is not None:
                self.labels_layer.editable = False  # no session watches it now: a stroke would be lost
        self._forget_session()

    def _video_of(self, layer):
        """What VideoSession opens: the file the reader read, else the layer's (T, H, W[, C]) array."""
        source = layer.metadata.get(SOURCE_KEY)
        if source:
            return source
        data = layer.data[0] if layer.multiscale else layer.data
        if data.ndim == (3 if layer.rgb else 2):  # a single image: a one-frame video
            data = data[None]
        return data

    # ------------------------------------------------------------------------------- model
    def set_model(self, model) -> None:
        """Use an already built model (scripts, tests); an open session moves over to it. The widget
        takes the model when the moved session arrives (``_on_yield``), even if Cancel was pressed
        meanwhile: if the move fails (say, a prompts-only SAM model for a session with
        expressions), session and widget both keep the model they had."""
        if self.closed:
            return
        if self.session is not None and self.session.model is not model:
            session, save_to = self.session, self.autosave_file()
            self._start("moving the session to the new model",
                        lambda token: _jobs.switch_model(session, model, save_to),
                        on_done=lambda result: self.status.setText(
                            f"{self._model_note(self.model)} The session moved to it."))
            return
        self._take_model(model)
        if self._pending_restore is not None:
            self.restore_session(*self._pending_restore)
        elif self.session is None:
            self._offer_restore(self.selected_layer())

    def _take_model(self, model) -> None:
        if model is not self.model:  # a restore that failed on the old model may work on this one
            self._offered -= self._retry_with_next_model
            self._retry_with_next_model.clear()
        self.model = model
        self.status.setText(self._model_note(model))

    @staticmethod
    def _model_note(model) -> str:
        device = next(model.parameters()).device if hasattr(model, "parameters") else "?"
        return f"Model ready: {model.config.preset} on {device}."

    def load_model(self) -> bool:
        try:
            kwargs = self.model_panel.load_kwargs()
        except ValueError as exc:
            show_warning(f"RefSAM: {exc}")
            return False
        return self._start("loading the model", lambda token: _jobs.load_model(kwargs),
                           on_done=lambda result: self.set_model(result.value), uses_video=False)

    # ----------------------------------------------------------------------------- actions
    def _ready(self) -> bool:
        layer = self.selected_layer()
        if self._refuse_if_busy():  # before anything below parks the session the run is using
            return False
        if self.model is None:
            show_warning("RefSAM: load a model first (Model → Load model).")
            return False
        if layer is None:
            show_warning("RefSAM: open a video first (File → Open, or the sample data).")
            return False
        if self.session is not None and layer is not self.video_layer:
            self._detach_session()
        if self.session is None and self._offer_restore(layer):
            # Its saved session was not offered yet (say, the offer was declined as a job ran):
            # restored first; the action is for the user to repeat.
            show_info("RefSAM: restoring the saved session of this video first; then try again.")
            return False
        self._use_video(layer)
        if self.autosave_file(layer) is None and id(layer) not in self._told_not_autosaved:
            # An in-memory video (the sample data, an array) has no file to save next to.
            self._told_not_autosaved.add(id(layer))
            show_info(f"RefSAM: “{layer.name}” has no file, so its session is not autosaved after each "
                      "change (only when closed); choose an “Autosave to” folder to keep it as you go.")
        return True

    def _use_video(self, layer, restoring: bool = False) -> None:
        self.video_layer = layer
        parked = self._parked.pop(id(layer), None) if self.session is None else None
        if parked is not None:
            session, labels = parked
            if labels is not None and labels in self.viewer.layers:
                self.labels_layer = labels
                labels.editable = True
                self._watch_labels(labels)
            self._adopt_session(session)
            if self.model is not None and session.model is not self.model:
                self.set_model(self.model)  # moves it to the model now loaded
        elif self.session is None:
            data = layer.data[0] if layer.multiscale else layer.data
            shape = tuple(data.shape[:-1] if layer.rgb else data.shape)
            shape = (1, *shape) if len(shape) == 2 else shape
            # Anything but 3-D: VideoSession names the problem. A restore makes none yet: the
            # session it brings makes it (or goes back into the layer an earlier widget left,
            # ``_earlier_labels_layer``), and a restore that fails leaves no empty layer behind.
            if len(shape) == 3 and not restoring:
                self._ensure_labels_layer(shape)

    def segment(self, text: str | None = None) -> bool:
        """Add an object for ``text`` (default: the expression field) and propagate it."""
        text = (self.expression.text() if text is None else text).strip()
        if not text:
            show_warning("RefSAM: type an expression to segment, e.g. “the red ball”.")
            return False
        if not self._ready():
            return False
        session, model, video, save_to = self.session, self.model, self._video_of(self.video_layer), \
            self.autosave_file()
        direction = self.direction.currentText()
        kwargs = {} if direction == "both" else {"direction": direction}
        return self._start("segmenting", lambda token: _jobs.segment(
            session, model, video, text, token, save_to, **kwargs))

    def add_from_prompts(self) -> bool:
        """Objects from the rectangles / clicks on the current frame, propagated over the video."""
        if not self._ready():
            return False
        frame = self._current_frame()
        prompts, skipped = collect_prompts(self.viewer.layers, self.video_layer, frame)
        if skipped:
            show_warning(f"RefSAM: left out {'; '.join(skipped)}.")
        if not prompts:
            show_warning(f"RefSAM: no rectangles (Shapes layer) or clicks (Points layer) on frame {frame}.")
            return False
        session, model, video, save_to = self.session, self.model, self._video_of(self.video_layer), \
            self.autosave_file()
        direction = self.direction.currentText()
        # The prompts that became objects go, even if the run is cancelled or fails while
        # propagating: a second click must not add them twice.
        return self._start("adding prompt objects", lambda token: _jobs.add_prompts(
            session, model, video, frame, prompts, token, direction, save_to),
            on_end=lambda result: consume(prompts[:len(result.objects)]))

    def correct_from_prompts(self, obj: int | None = None) -> bool:
        """Correct the selected object on the current frame from one rectangle and/or set of clicks
        there: the model's mask from them is locked as a keyframe and re-propagated."""
        if self._refuse_if_busy():
            return False
        if self.session is None:
            show_warning("RefSAM: nothing to correct yet; segment an object first.")
            return False
        obj = self.objects.selected_object() if obj is None else int(obj)
        if obj is None:
            show_warning("RefSAM: select the object to correct in the Objects table first.")
            return False
        frame = self._current_frame()
        prompts, skipped = collect_prompts(self.viewer.layers, self.video_layer, frame)
        if skipped:
            show_warning(f"RefSAM: left out {'; '.join(skipped)}.")
        if len(prompts) != 1:
            found = "none" if not prompts else f"{len(prompts)} (one per rectangle, plus clicks outside them)"
            show_warning(f"RefSAM: to correct object {obj}, draw one rectangle and/or clicks on frame {frame}; "
                         f"found {found}.")
            return False
        session, direction, save_to = self.session, self.direction.currentText(), self.autosave_file()

        def end(result):
            if frame in result.frames:  # the keyframe is set: its prompts go, as Add from prompts' do
                consume(prompts)
                if not result.cancelled and result.error is None:
                    self.status.setText(f"Object {obj} corrected on frame {frame} and re-propagated.")
        return self._start(f"correcting object {obj} from prompts", lambda token: _jobs.correct_from_prompt(
            session, obj, frame, prompts[0], token, direction, save_to), on_end=end)

    def add_clicks_layer(self):
        """A clicks layer over the selected video, selected and in add mode (None without a video);
        N in it switches Negative clicks on and off."""
        video = self.selected_layer()
        if video is None:
            show_warning("RefSAM: open a video first (File → Open, or the sample data).")
            return None
        layer = add_clicks_layer(self.viewer, video, positive=not self.negative_clicks.isChecked())
        layer.bind_key("n", self._toggle_negative_clicks, overwrite=True)
        layer.events.feature_defaults.connect(self._show_click_sign)
        return layer

    def _toggle_negative_clicks(self, layer) -> None:
        if self.closed:
            return  # the dock was closed: its hidden checkbox no longer speaks for the layers
        self.negative_clicks.setChecked(next_click_positive(layer))

    def _show_click_sign(self, event) -> None:
        """The checkbox shows what the next click of the layer changed last will be (selecting a
        point makes its sign the next one, as napari does for every feature)."""
        if self.closed:
            return
        self.negative_clicks.blockSignals(True)
        self.negative_clicks.setChecked(not next_click_positive(event.source))
        self.negative_clicks.blockSignals(False)

    def repropagate(self, frame: int | None = None) -> bool:
        if self.session is None:
            show_warning("RefSAM: nothing to re-propagate yet; segment an object first.")
            return False
        frame = self._current_frame() if frame is None else int(frame)
        session, direction, save_to = self.session, self.direction.currentText(), self.autosave_file()
        return self._start("re-propagating", lambda token: _jobs.repropagate(
            session, frame, token, direction, save_to))

    def undo(self) -> bool:
        """Revert the session's last propagation or correction (the engine keeps the history)."""
        if self.session is None or self._refuse_if_busy():
            return False
        try:
            undone = self.session.undo()
        except Exception as exc:  # noqa: BLE001
            show_warning(describe_error("undoing", exc))
            return False
        if undone is None:
            self.status.setText("Nothing to undo.")
            return False
        self._sync_all()
        session, save_to = self.session, self.autosave_file()
        return self._start("autosaving", lambda token: _jobs.save(session, save_to))

    def remove_object(self, obj: int | None = None) -> bool:
        obj = self.objects.selected_object() if obj is None else obj
        if self.session is None or obj is None or self._refuse_if_busy():
            return False
        try:
            self.session.remove_object(obj)
        except Exception as exc:  # noqa: BLE001
            show_warning(describe_error(f"removing object {obj}", exc))
            return False
        self._sync_all()
        session, save_to = self.session, self.autosave_file()
        return self._start("autosaving", lambda token: _jobs.save(session, save_to))

    def cancel(self) -> None:
        """Stop the running job between two frames (each frame stays wholly old or wholly new)."""
        if self._token is not None:
            self._token.cancel()
            self.status.setText("Cancelling…")
