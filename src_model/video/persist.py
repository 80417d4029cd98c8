"""Saving and restoring a VideoSession: one zip file, written atomically.

Entries: ``session.json`` (format version, model signature, video path/identity/shape, settings,
objects with their expressions and prompts), ``labels.npy`` (streamed one frame at a time, so a
long memmapped volume is never loaded whole), ``keyframes/<obj>/<frame>.npy`` (bool masks) and
``state/<obj>/{track,known,cond}.npy`` (the per-frame chain state that lets a run resume exactly).
The chain state is only restored for the same model weights; with other weights it is dropped
(runs then restart their chains from keyframes, anchors, or frame 0). ``history/...`` holds the
undo steps (``persist_history``), so a restored session can undo what came before the save;
files written before it existed restore with an empty undo history.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import DatasetFormatError, VideoReadError
from .objects import PROMPT, VideoObject, check_mask
from .persist_history import read_history, write_history

FORMAT = "napari-refsam session"
FORMAT_VERSION = 1


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def save_session(session, path) -> Path:
    """Write ``session`` to ``path`` (replacing it atomically: temp file, fsync, rename)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"cannot save the session to {path}: it is a folder; give a file name such as "
                                f"{path / 'session.zip'}")
    store = session._store
    source = session.source
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "weights_id": str(session.model.weights_id), "preset": session.model.config.preset,
        "video": {"path": None if source.path is None else str(Path(source.path).resolve()),
                  "name": source.name, "identity": source.identity(),
                  "shape": [session.num_frames, *session.frame_shape]},
        "settings": session.settings, "next_id": session._next_id, "labels_dtype": store.dtype.str,
        "objects": [{"id": o.id, "kind": o.kind, "text": o.text, "prompt": o.prompt,
                     "keyframes": sorted(o.keyframes)} for o in session._objects.values()],
    }
    with atomic_file(path, mode="wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("session.json", json.dumps(meta, indent=1))
            with archive.open("labels.npy", "w", force_zip64=True) as entry:
                header = {"descr": store.dtype.str, "fortran_order": False, "shape": store.shape}
                np.lib.format.write_array_header_1_0(entry, header)
                for t in range(session.num_frames):
                    entry.write(store.read(t).tobytes())
            for o in session._objects.values():
                for t, mask in o.keyframes.items():
                    archive.writestr(f"keyframes/{o.id}/{t}.npy", _npy(np.asarray(mask)))
                for name in ("track", "known", "cond"):
                    archive.writestr(f"state/{o.id}/{name}.npy", _npy(getattr(o, name)))
            write_history(archive, session, _npy)
    return path


def _read_npy(archive: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    try:
        return np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
    except (KeyError, ValueError, OSError) as exc:
        raise DatasetFormatError(f"session file {path}: entry {name} is missing or unreadable ({exc})") from None


def load_session(cls, model, path, video=None, *, same_video: bool = False, warn=None, **kwargs):
    """Restore a session saved by ``save_session`` (see ``VideoSession.load``).

    same_video: refuse (VideoReadError) a session saved for another video, or for this one before
    it changed (its identity differs; a file or frame folder moved as it was still counts as the
    same). Otherwise such a session is restored, and ``warn(message)`` says so (default
    ``warnings.warn``; a job in a worker thread passes its own, to tell the user in its own way).
    kwargs override the saved settings (cache_dir, labels_path, batch_size, ...).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"session file {path} does not exist")
    try:
        archive = zipfile.ZipFile(path)
        meta = json.loads(archive.read("session.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise DatasetFormatError(f"{path} is not a napari-refsam session file ({exc})") from None
    with archive:
        try:
            return _open_saved(cls, model, path, video, meta, archive, kwargs, same_video, warn)
        except KeyError as exc:  # an entry of the archive or a key of session.json
            missing = exc.args[0] if exc.args else exc  # zipfile says which entry; json keys come bare
            raise DatasetFormatError(f"{path} is incomplete or damaged, not a whole napari-refsam session: "
                                     f"missing {missing!s}") from None


def _open_saved(cls, model, path: Path, video, meta: dict, archive: zipfile.ZipFile, kwargs: dict,
                same_video: bool, warn):
    """``load_session`` once the archive is open: the session, restored."""
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DatasetFormatError(f"{path}: format {meta.get('format')!r} version {meta.get('format_version')} "
                                 f"is not a session this napari-refsam reads (up to {FORMAT_VERSION})")
    stored = meta["video"]
    if video is None:
        if stored["path"] is None:
            raise VideoReadError(f"{path} was made on an in-memory array; pass video= to load it")
        video = stored["path"]
    settings = {k: v for k, v in meta["settings"].items() if k in (
        "cache_dir", "batch_size", "max_cache_bytes", "mask_threshold", "undo_depth", "contrast_limits")}
    settings.update(kwargs)
    session = cls(model, video, **settings)
    try:
        _restore(session, meta, archive, path, same_video, warn)
    except BaseException:
        session.close()
        raise
    return session


def _moved(identity: str, saved: dict, source) -> bool:
    """The saved video under another path, as it was: a file or frame folder keeps its sizes and
    modification times when moved or renamed, so the identities differ only by the path."""
    if saved.get("path") is None or source.path is None:
        return False
    return identity.replace(str(Path(source.path).resolve()), "", 1) == saved["identity"].replace(saved["path"], "", 1)


def _restore(session, meta: dict, archive: zipfile.ZipFile, path: Path, same_video: bool, warn) -> None:
    shape = [session.num_frames, *session.frame_shape]
    if shape != list(meta["video"]["shape"]):
        raise VideoReadError(f"{path} was saved for a video of shape {tuple(meta['video']['shape'])} (T, H, W), "
                             f"but {session.source.name!r} has shape {tuple(shape)}")
    identity, saved = session.source.identity(), meta["video"]
    if identity != saved["identity"]:
        if same_video and not _moved(identity, saved, session.source):
            was = saved["path"] or f"an in-memory video ({saved['name']!r})"
            now = session.source.path or f"this in-memory video ({session.source.name!r})"
            raise VideoReadError(f"{path} was saved for {was}; {now} is another video, or has changed since")
        message = (f"{session.source.name!r} is not byte-identical to the video {path} was saved with "
                   "(moved or re-encoded?); labels are restored as saved")
        if warn is None:
            warnings.warn(message, stacklevel=5)  # _restore, _open_saved, load_session, VideoSession.load: its caller
        else:
            warn(message)
    same_model = str(session.model.weights_id) == meta["weights_id"]
    dim = session.model.config.sam.prompt_embed_dim
    for entry in meta["objects"]:
        obj = VideoObject(int(entry["id"]), entry["kind"], session.num_frames, dim, text=entry["text"],
                          prompt=entry["prompt"])
        if obj.kind != PROMPT:
            obj.text_prompt = session.encode_text(obj.text)
        for t in entry["keyframes"]:
            mask = _read_npy(archive, f"keyframes/{obj.id}/{t}.npy", path)
            obj.keyframes[int(t)] = check_mask(mask, *session.frame_shape)
        if same_model:
            for name in ("track", "known", "cond"):
                value = _read_npy(archive, f"state/{obj.id}/{name}.npy", path)
                if value.shape != getattr(obj, name).shape:
                    raise DatasetFormatError(f"{path}: state/{obj.id}/{name}.npy has shape {value.shape}, "
                                             f"expected {getattr(obj, name).shape}")
                setattr(obj, name, value.astype(getattr(obj, name).dtype))
        session._objects[obj.id] = obj
    session._next_id = int(meta["next_id"])
    store = session._store
    dtype = np.dtype(meta["labels_dtype"])
    store.promote(dtype)
    with archive.open("labels.npy") as entry:
        np.lib.format.read_magic(entry)
        got_shape, _, got_dtype = np.lib.format.read_array_header_1_0(entry)
        if list(got_shape) != shape or got_dtype != dtype:
            raise DatasetFormatError(f"{path}: labels.npy is {got_dtype} {got_shape}, expected {dtype} {tuple(shape)}")
        size = int(np.prod(shape[1:])) * dtype.itemsize
        for t in range(session.num_frames):
            data = entry.read(size)
            if len(data) != size:
                raise DatasetFormatError(f"{path}: labels.npy is truncated at frame {t}")
            store.write(t, np.frombuffer(data, dtype).reshape(shape[1:]))
    try:
        read_history(archive, session, lambda name: _read_npy(archive, name, path), same_model)
    except (ValueError, KeyError) as exc:  # e.g. a removed text object on plain SAM weights
        # The history is a convenience: the labels and objects above are the session; keep them.
        session._history._edits = []
        message = f"{path}: its undo history was not restored ({exc}); nothing to undo from before the save"
        if warn is None:
            warnings.warn(message, stacklevel=5)
        else:
            warn(message)
