"""Autosaved sessions coming back: offered once per file when their video is opened or picked,
restored onto that video (once a model is loaded), or kept under a dated name when declined.

``SessionRestore`` is mixed into ``RefSAMWidget`` (before ``SessionView``); it uses the widget's
``viewer``, ``model``, ``session``, ``video_layer``, ``layer_combo``, ``autosave_edit``, ``status``,
``_offered``, ``_pending_restore`` and its job machinery (``_start``, ``_refuse_if_busy``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox

from . import _jobs
from ._autosave import autosave_path, earlier_autosave_path, existing_autosave, saved_video_path, set_aside
from ._reader import NAME_KEY, SOURCE_KEY


class SessionRestore:
    def autosave_file(self, layer=None):
        layer = layer if layer is not None else (self.video_layer or self.selected_layer())
        if layer is None:
            return None
        meta = layer.metadata
        return autosave_path(meta.get(SOURCE_KEY), meta.get(NAME_KEY) or layer.name,
                             self.autosave_edit.text().strip() or None)

    def _earlier_autosave_file(self, layer):
        return earlier_autosave_path(layer.metadata.get(SOURCE_KEY), self.autosave_edit.text().strip() or None)

    def _saved_autosave(self, layer):
        """The video's autosave on disk: its own file, else the one an autosave folder held under the
        name files had before it carried a path hash, if it names this video's path (a same-named
        video's is left alone for that video to find; ``_jobs.restore`` checks the rest)."""
        own = existing_autosave(self.autosave_file(layer))
        if own is not None:
            return own
        earlier = existing_autosave(self._earlier_autosave_file(layer))
        source = layer.metadata.get(SOURCE_KEY)
        if earlier is None or saved_video_path(earlier) != str(Path(source).resolve()):
            return None
        return earlier

    # ----------------------------------------------------------------------------- restore
    def _offer_restore_for_selected(self) -> None:
        self._offer_restore(self.selected_layer())

    def _offer_restore(self, layer) -> bool:
        """Offer the video's autosave once; True if its restore started (or waits for a model)."""
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
            start = own.parent if own is not None and own.parent.is_dir() else Path.home()
            path, _ = QFileDialog.getOpenFileName(self, "Restore a RefSAM session", str(start),
                                                  "RefSAM session (*.npz)")
            if not path:
                return False
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
        if self.model is None:
            if self._pending_restore is not None and self._pending_restore[0] != path:
                self._drop_pending_restore()
            self._pending_restore = (path, layer)
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
        own, earlier = self.autosave_file(layer), self._earlier_autosave_file(layer)
        is_earlier = earlier is not None and Path(path).resolve() == earlier.resolve()
        # The video's own autosave (or an earlier one) comes without the user picking it: the job
        # restores it only if it was saved for this very video.
        autosave = is_earlier or (own is not None and Path(path).resolve() == Path(own).resolve())
        # A restore that fails and leaves the file in place (a model problem, say) is offered again
        # with the next model, not before each action: on this model it would fail each time, and
        # a new session here keeps the file under a dated name (``_jobs._ensure_session``).
        return self._start("restoring the session",
                           lambda token: _jobs.restore(model, path, video, autosave, current, own),
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
