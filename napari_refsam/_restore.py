"""Autosaved sessions coming back: offered once per file when their video is opened or picked,
restored onto that video (once a model is loaded), or kept under a dated name when declined; a
file the user picks (Restore…); and the Autosave-to folder (remembered, and saved into when chosen).

``SessionRestore`` is mixed into ``RefSAMWidget`` (before ``SessionView``); it uses the widget's
``viewer``, ``model``, ``session``, ``video_layer``, ``layer_combo``, ``autosave_edit``, ``status``,
``_offered``, ``_pending_restore`` and its job machinery (``_start``, ``_refuse_if_busy``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QSettings
from qtpy.QtWidgets import QFileDialog, QMessageBox

from . import _jobs
from ._autosave import (
    autosave_path, earlier_autosave_paths, existing_autosave, latest_let_go, let_go_path, saved_video_path,
    set_aside,
)
from ._reader import SOURCE_KEY, video_name

AUTOSAVE_SETTING = "autosave_folder"


def settings() -> QSettings:
    """The plugin's own settings file (``~/.config/napari-refsam/refsam.ini`` on Linux)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "napari-refsam", "refsam")


def file_of(layer) -> str | None:
    """The file a video layer came from: what this plugin's reader read, else the local file
    napari's own reader (or another plugin) read it from, so its session is autosaved next to it."""
    source = layer.metadata.get(SOURCE_KEY)
    if source:
        return source
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path and Path(path).exists() else None


class SessionRestore:
    def autosave_file(self, layer=None):
        layer = layer if layer is not None else (self.video_layer or self.selected_layer())
        if layer is None:
            return None
        return autosave_path(file_of(layer), video_name(layer), self._autosave_folder())

    def _autosave_folder(self, text: str | None = None) -> Path | None:
        """The Autosave-to folder as typed (``~`` is the home folder), or None: next to the video."""
        text = (self.autosave_edit.text() if text is None else text).strip()
        return Path(text).expanduser().absolute() if text else None

    def _earlier_autosave_files(self, layer) -> list[Path]:
        return earlier_autosave_paths(file_of(layer), self._autosave_folder())

    def _saved_autosave(self, layer):
        """The video's autosave on disk: its own file, else one saved before the Autosave-to folder
        was chosen (next to the video, or in the folder under a name without the path hash) that
        names this video's path (a same-named video's is left for that video to find;
        ``_jobs.restore`` checks the rest)."""
        own = existing_autosave(self.autosave_file(layer))
        if own is not None:
            return own
        source = file_of(layer)
        if source is None and self._autosave_folder() is None:  # saved when let go, under the cache
            return latest_let_go(video_name(layer))
        beside, *in_folder = self._earlier_autosave_files(layer) or [None]
        if beside is not None and beside.is_file():  # named after this very file, whatever it records
            return beside
        for earlier in in_folder:
            if earlier.is_file() and saved_video_path(earlier) == str(Path(source).resolve()):
                return earlier
        return None

    # ----------------------------------------------------------------------------- restore
    def _offer_restore_for_selected(self) -> None:
        self._offer_restore(self.selected_layer())

    def _offer_restore(self, layer) -> bool:
        """Offer the video's autosave once; True if its restore started (or waits for a model)."""
        if self.closed:  # a closed dock (its deferred first offer, say) offers nothing
            return False
        path = self._saved_autosave(layer) if layer is not None else None
        # Not while a job runs: a first run's session may still be on its way (offered when the
        # job ends, ``_follow_pick``, or before the next action on this video, ``_ready``).
        if (path is None or path in self._offered or self.session is not None or self._worker is not None
                or id(layer) in self._parked):  # a parked session is newer than its autosave
            return False
        self._offered.add(path)
        accept = self.auto_restore
        if accept is None:
            reply = QMessageBox.question(self, "RefSAM", f"A saved RefSAM session exists for “{layer.name}”:\n"
                                         f"{path}\n\nRestore it?")
            accept = reply == QMessageBox.StandardButton.Yes
        if not accept:
            kept = set_aside(path)
            show_info(f"RefSAM: the earlier session was kept as {kept}")
            return False
        return self.restore_session(path, layer) or self._pending_restore is not None

    def restore_saved_session(self, path=None) -> bool:
        """**Restore session…**: a session file the user picks (default: a file dialog), such as an
        earlier autosave kept under a dated name, restored onto the selected video. The session
        that video has now is kept first: saved, and set aside under a dated name."""
        layer = self.selected_layer()
        if layer is None:
            show_warning("RefSAM: open the video of the session first.")
            return False
        own = self.autosave_file(layer)
        if path is None:
            start = (own or let_go_path(video_name(layer))).parent.parent  # the folder of the dated ones too
            start = own.parent if own is not None and own.parent.is_dir() else start
            start = start if start.is_dir() else Path.home()
            path, _ = QFileDialog.getOpenFileName(self, "Restore a RefSAM session", str(start),
                                                  "RefSAM session (*.npz)")
            if not path:
                return False
        self._settle_pending_paint()  # a stroke not yet applied belongs to the session it was painted on
        has_session = (self.session is not None and layer is self.video_layer) or id(layer) in self._parked
        if has_session and own is None:
            show_warning(f"RefSAM: the session of “{layer.name}” is saved nowhere, and the restore would "
                         "replace it; choose an Autosave-to folder first, so it is kept.")
            return False
        self._offered.add(Path(path))  # picked: never also offered as an autosave
        return self.restore_session(Path(path), layer, picked=True)

    def restore_session(self, path, layer=None, picked: bool = False) -> bool:
        """Restore an autosaved session onto ``layer`` (default: the selected video), once a model
        is loaded: the restore waits for it, and stays with that layer if another is picked meanwhile.
        picked: the user chose the file; the session the video has now is kept aside, then replaced."""
        layer = self.selected_layer() if layer is None else layer
        if layer is None or layer not in self.viewer.layers:
            self._drop_pending_restore()
            show_warning("RefSAM: open the video of this session first.")
            return False
        if self.closed:
            return False
        if self.model is None:
            if self._pending_restore is not None and self._pending_restore[0] != path:
                self._drop_pending_restore()
            self._pending_restore = (path, layer, picked)  # picked stays picked when the model comes
            self.status.setText(f"The saved session will be restored once a model is loaded ({path}).")
            return False
        self._pending_restore = None
        if self._refuse_if_busy():  # before the video is switched under the running job
            self._offered.discard(path)
            return False
        self.layer_combo.blockSignals(True)  # the session is switched below, not by the combo's signal
        self.layer_combo.setCurrentIndex(self.layer_combo.findData(layer))
        self.layer_combo.blockSignals(False)
        if self.session is not None and layer is not self.video_layer:
            self._detach_session()
        self._use_video(layer, restoring=True)
        model, video, current = self.model, self._video_of(layer), self.session if picked else None
        own = self.autosave_file(layer)
        is_earlier = any(Path(path).resolve() == earlier.resolve() for earlier in self._earlier_autosave_files(layer))
        # The video's own autosave (or an earlier one) offered without the user picking it: the
        # job restores it only if it was saved for this very video, else keeps it aside. A file the
        # user picked is theirs: restored with a warning if the video changed, never renamed.
        autosave = not picked and (is_earlier or (own is not None and Path(path).resolve() == Path(own).resolve()))
        # A restore that fails and leaves the file in place (a model problem, say) is offered again
        # with the next model, not before each action: on this model it would fail each time, and
        # a new session here keeps the file under a dated name (``_jobs._ensure_session``).
        return self._start("restoring the session",
                           lambda token: _jobs.restore(model, path, video, autosave, current,
                                                       own if picked else None),
                           on_error=lambda result: self._retry_with_next_model.add(path),
                           on_done=(lambda result: self._adopt_earlier_autosave(path, own)) if is_earlier else None)

    def _adopt_earlier_autosave(self, path, own) -> None:
        """An earlier autosave, restored (so checked to be this video's), becomes its own file: not
        left where a same-named video would find it, refuse it and set it aside."""
        if own is not None and not own.exists():
            own.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, own)
            self._offered.add(own)  # offered already, as the earlier file
            with contextlib.suppress(OSError):
                Path(path).parent.rmdir()  # the earlier folder, when nothing else is in it

    def _drop_pending_restore(self) -> None:
        """Forget a restore that waits for a model; its autosave is offered again when its video is
        picked (else the next autosave there would replace it unasked)."""
        if self._pending_restore is not None:
            self._offered.discard(self._pending_restore[0])
            self._pending_restore = None

    # ----------------------------------------------------------------------- autosave folder
    def _choose_autosave_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Autosave sessions to")
        if folder:
            self.autosave_edit.setText(folder)
            self._remember_autosave_dir()

    def _remember_autosave_dir(self) -> None:
        """The next widget (also after napari restarts) starts with the folder chosen last; the
        sessions open now are saved where it puts them (an in-memory video's had no place yet),
        and what they left at the previous place is kept under a dated name, not offered again."""
        folder = self._autosave_folder()
        text = "" if folder is None else str(folder)
        previous = str(settings().value(AUTOSAVE_SETTING, "") or "")
        if text != self.autosave_edit.text():
            self.autosave_edit.setText(text)  # "~/x" shown as the folder it means
        if text == previous:
            return  # the field lost focus, unchanged
        settings().setValue(AUTOSAVE_SETTING, text)
        self._save_where_autosaves_go(self._autosave_folder(previous) if previous else None)

    def _save_where_autosaves_go(self, previous: Path | None = None) -> None:
        """Save the session shown and those set aside to their autosave files (after the run, if
        one is going): the next autosave would only come with the next change. ``previous``: the
        folder autosaves went to before (None: next to the videos)."""
        if self._worker is not None:
            self._save_after_job = (previous,)
            return
        self._save_after_job = False
        layers = {id(layer): layer for layer in self.viewer.layers}
        shown = [(self.session, self.video_layer)] if self.session is not None else []
        parked = [(session, layers[key]) for key, (session, _) in self._parked.items() if key in layers]
        moves = [(session, self.autosave_file(layer), autosave_path(file_of(layer), video_name(layer), previous))
                 for session, layer in shown + parked if session.objects]
        moves = [move for move in moves if move[1] is not None]
        if moves:
            self._start("saving to the autosave folder", lambda token: _jobs.save_all(moves))
