"""Export dataset…: the video, the session's labels (corrections included) and its expressions,
added to a Ref-YouTube-VOS-style dataset folder, the one ``refsam train`` and ``refsam eval`` read
(the widget's counterpart of ``refsam segment --dataset``).

``DatasetExport`` is mixed into ``RefSAMWidget``; it uses the widget's ``session``,
``video_layer``, ``progress`` and job machinery (``_start``, ``_refuse_if_busy``).
"""
from __future__ import annotations

import re
import threading

from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox

from ._reader import video_name


def dataset_name(layer) -> str:
    """The video's folder name in the dataset: its file or sample name, made a plain folder name."""
    return re.sub(r"[/\\\x00]", "_", video_name(layer)).lstrip(".") or "video"


def export_job(session, root, name: str, overwrite: bool, token):
    """Write the video's frames, labels and expressions into the dataset at ``root``.

    The writer runs in a thread of its own while this generator reports its progress
    (("progress", frames done)); Cancel stops it between two frames, while the JPEG frames are
    written: the dataset is then left as it was (each folder is written atomically).
    """
    from src_model.errors import CancelledError
    from src_model.export import write_dataset_video

    texts = {k: [info["text"]] for k, info in session.objects.items() if info.get("text")}
    done, outcome = [0], {}

    class Frames:  # read one at a time by the writer; counts them and stops on Cancel
        def __len__(self):
            return session.num_frames

        def __getitem__(self, t):
            if token.cancelled:
                raise CancelledError("export cancelled")
            done[0] = t + 1
            return session.source[t]

    def write():
        try:
            outcome["folder"] = write_dataset_video(root, name, Frames(), session.labels, texts, overwrite=overwrite)
        except BaseException as exc:  # noqa: BLE001 - raised in the job below
            outcome["error"] = exc

    yield ("status", f"Adding '{name}' to the dataset {root}…")
    writer = threading.Thread(target=write, name="refsam-dataset-export", daemon=True)
    writer.start()
    while writer.is_alive():
        writer.join(0.1)
        yield ("progress", done[0])
    if "error" in outcome:
        raise outcome["error"]
    untexted = len(session.objects) - len(texts)
    if untexted:
        yield ("warning", f"RefSAM: {untexted} object(s) without an expression (prompts or painted masks): "
                          "their masks are in the dataset's annotations, but training uses objects with an "
                          "expression only")
    return outcome["folder"]


class DatasetExport:
    def export_dataset(self, root=None, name: str | None = None, overwrite: bool | None = None) -> bool:
        """Add the video and its labels to the dataset at ``root`` (asked for when None) under
        ``name`` (default: the video's name); an existing video of that name is replaced if
        ``overwrite`` (asked for when None)."""
        from src_model.atomic import OutputExistsError
        from src_model.data.ytvos import check_can_add

        if self._refuse_if_busy():
            return False
        session = self.session
        if session is None or not session.objects:
            show_warning("RefSAM: nothing to export yet; segment an object first.")
            return False
        if root is None:
            root = QFileDialog.getExistingDirectory(self, "Add this video to a dataset folder")
            if not root:
                return False
        name = name or dataset_name(self.video_layer)
        try:
            try:
                check_can_add(root, name, bool(overwrite))  # before the frames are read, not after
            except OutputExistsError:
                if overwrite is None:
                    reply = QMessageBox.question(self, "RefSAM", f"The dataset {root} already has a video "
                                                 f"'{name}'.\n\nReplace it?")
                    overwrite = reply == QMessageBox.StandardButton.Yes
                if not overwrite:
                    show_warning(f"RefSAM: '{name}' is already in {root}; nothing was exported.")
                    self.status.setText("Nothing was exported.")  # not an earlier export's "Added to ..."
                    return False
                check_can_add(root, name, True)  # replacing: its folders must hold only what an export wrote
        except (OSError, ValueError) as exc:
            show_warning(f"RefSAM: cannot add to {root}: {exc}")
            self.status.setText("Nothing was exported.")
            return False
        # on_end, not on_done: a Cancel that comes once the frames are written (the last,
        # quick steps) cannot stop the export, and the status must say it was added.
        return self._start("exporting the dataset", lambda token: export_job(session, root, name, bool(overwrite),
                                                                             token),
                           on_end=lambda result: result.value is not None and self.status.setText(
                               f"Added to the dataset: {result.value}"))
