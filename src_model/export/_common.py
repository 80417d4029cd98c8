"""Checks and helpers shared by the export formats.

Label volumes may be memmaps (long videos), dask or zarr arrays (napari layers): everything here
touches them one frame at a time, never as a whole.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from ..atomic import OutputExistsError
from ..errors import DatasetFormatError

UINT16_MAX = np.iinfo(np.uint16).max


def refuse_replacing_the_video(video, target, flag: str) -> None:
    """An output that is, or would replace a folder holding, the input video (symlinks followed).

    OutputExistsError (an OSError), not ValueError: napari reads a writer's ValueError as "this
    writer cannot write that" and shows only a misleading warning."""
    video, where = Path(os.path.realpath(video)), Path(os.path.realpath(target))
    if where == video or where in video.parents:
        raise OutputExistsError(f"{flag} {target} is or holds the input video {video}; write somewhere else")


# The endings exports are named by (".png": the napari writer of PNG folders). A file name made only
# of them ("x/.tif", or napari's "x/" + ".tif") has no suffix to Path (".tif" is a dot file).
EXPORT_ENDINGS = (".tif", ".tiff", ".json", ".png")


def refuse_ending_only(target, flag: str, png: str) -> None:
    """A target named only by export endings ("x/.tif", "x/.png.tif"): ValueError, not a hidden file.

    Written as asked it would be a hidden file, or (no suffix: a folder target) a hidden PNG
    folder. flag: how the caller names the target ("-o"); png: how that caller asks for PNG frames."""
    first, *endings = Path(target).name.lower().split(".")
    if first or not endings or not all(f".{e}" in EXPORT_ENDINGS for e in endings):
        return
    ending = f".{endings[-1]}" if endings[-1] != "png" else ".tif"
    raise ValueError(f"{flag} {target} names no file, only an ending; name the file, e.g. labels{ending}, "
                     f"or {png} for DAVIS palette PNG frames")


def check_labels(labels) -> tuple[object, int]:
    """Validate a label volume and return it as (T, H, W) together with its largest id.

    labels: (T, H, W) or a single (H, W) frame of non-negative integer (or bool) ids.
    Reads the volume frame by frame to find the largest id and catch negative ids.
    """
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        labels = np.asarray(labels)  # lists and the like; arrays, memmaps, dask stay lazy
    shape = tuple(labels.shape)
    if len(shape) == 2:
        labels = np.asarray(labels)[None]
        shape = (1,) + shape
    if len(shape) != 3:
        raise ValueError(f"labels must be a (T, H, W) volume of object ids, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
        raise ValueError(f"labels must have at least one frame of at least 1 x 1 pixels, got shape {shape}")
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "uib":
        raise ValueError(f"labels must hold integer object ids, got dtype {dtype}")
    max_id = 0
    for t in range(shape[0]):
        frame = np.asarray(labels[t])
        if dtype.kind == "i" and frame.min() < 0:
            raise ValueError(f"labels frame {t} holds negative id {int(frame.min())}; ids must be >= 0")
        max_id = max(max_id, int(frame.max()))
    if max_id > np.iinfo(np.uint32).max:
        raise ValueError(f"labels hold id {max_id}, larger than the largest supported id {np.iinfo(np.uint32).max}")
    return labels, max_id


def label_dtype(max_id: int) -> np.dtype:
    """uint16 unless an id needs more (then uint32) — the dtype every reader returns."""
    return np.dtype(np.uint16 if max_id <= UINT16_MAX else np.uint32)


def frames_as(labels, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Yield the (H, W) frames of ``labels`` one by one, converted to ``dtype``."""
    for t in range(len(labels)):
        yield np.ascontiguousarray(np.asarray(labels[t]), dtype=dtype)


def check_expressions(expressions: Mapping | None) -> dict[int, list[str]]:
    """Normalise ``{obj_id: [str, ...]}``; a single string is accepted as a one-item list."""
    if not expressions:
        return {}
    out: dict[int, list[str]] = {}
    for key, texts in expressions.items():
        try:
            obj = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"expression keys must be integer object ids, got {key!r}") from None
        if obj <= 0:
            raise ValueError(f"expression key {obj}: object ids start at 1 (0 is background)")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"expressions of object {obj} must be strings, got {texts!r}")
        out[obj] = texts
    return out


@contextlib.contextmanager
def naming_path(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise low-level OS errors (read-only folder, full disk) with the target path in the message.

    The errno is kept, so the exception keeps its OSError subclass (PermissionError, ...).
    ``OutputExistsError`` and errors that already name the path pass through unchanged.
    """
    try:
        yield
    except OutputExistsError:
        raise
    except OSError as exc:
        if str(path) in str(exc):
            raise
        reason = exc.strerror or str(exc) or type(exc).__name__
        code = exc.errno if exc.errno is not None else errno.EIO
        # Two arguments only: a filename argument would repeat the path at the end of the message.
        raise OSError(code, f"cannot write {path}: {reason}") from exc


def is_dir_target(path: str | os.PathLike) -> bool:
    """A folder export: a path ending in a separator, or without a file suffix."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or Path(text).suffix == ""


def load_json(path: Path, what: str):
    """Parse a JSON file; malformed JSON becomes a DatasetFormatError with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: {what} is not UTF-8 text ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(
            f"{path}: {what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def to_label_dtype(data: np.ndarray, source: str) -> np.ndarray:
    """Check integer ids >= 0 and return them as uint16, or uint32 when an id exceeds 65535."""
    if data.dtype.kind == "b":
        return data.astype(np.uint16)
    if data.dtype.kind not in "ui":
        raise DatasetFormatError(f"{source}: holds {data.dtype} values; expected integer object ids")
    if data.size == 0:
        return data.astype(np.uint16)
    low, high = int(data.min()), int(data.max())
    if low < 0:
        raise DatasetFormatError(f"{source}: holds negative id {low}; object ids must be >= 0")
    if high > np.iinfo(np.uint32).max:
        raise DatasetFormatError(f"{source}: holds id {high}, larger than the largest supported id 4294967295")
    return data.astype(label_dtype(high), copy=False)
