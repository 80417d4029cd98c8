"""npe2 reader: videos, TIFF stacks and frame folders as lazy time-series Image layers.

Frames come from ``src_model.video.source.open_video`` one at a time (dask, one chunk per frame),
so a long video shows its first frame at once and memory stays flat while scrubbing. Label exports
written by napari-refsam (TIFF with RefSAM metadata, COCO JSON, palette-PNG folders) open as
Labels layers with their expressions in the layer metadata.

The layer metadata keys the widget relies on are defined here (``SOURCE_KEY`` ...), so the reader,
the sample data and the widget agree on one spelling.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

SOURCE_KEY = "refsam_source"            # str path of the video file / folder the layer shows
NAME_KEY = "refsam_video_name"          # short video name (file stem)
EXPRESSIONS_KEY = "refsam_expressions"  # {obj_id: [expression, ...]}
VIDEO_SOURCE_KEY = "refsam_video_source"  # on a labels layer: SOURCE_KEY of the video it labels
AXIS_LABELS = ("t", "y", "x")           # the dims slider then reads "t", not "-3"

VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# Returned for a file we accepted but could not read: napari then adds no layer and raises nothing
# (npe2's documented "null layer" value), while the reason was already shown as a notification.
NULL_LAYER = [(None,)]


def video_name(layer) -> str:
    """The short name of the video a layer shows: its file's (this reader's), else the layer's."""
    return str(layer.metadata.get(NAME_KEY) or layer.name)


def napari_get_reader(path):
    """Return a reader function for ``path``, or None when this plugin does not handle it."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:  # napari stacks several files itself; we read one video at a time
            return None
        path = path[0]
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if path.is_dir():
        kind = _folder_kind(path)
        return None if kind is None else _reader(kind)
    if suffix == ".json":
        return _reader("labels")
    if suffix in TIFF_SUFFIXES:
        return _reader("labels" if _is_refsam_tiff(path) else "video")
    if suffix in VIDEO_SUFFIXES:
        return _reader("video")
    return None


def _reader(kind: str):
    def read(path):
        if isinstance(path, (list, tuple)):
            path = path[0]
        try:
            return read_labels_export(path) if kind == "labels" else read_video(path)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a message, never a crash
            from napari.utils.notifications import show_error

            show_error(f"RefSAM could not open {path}: {_message(exc)}")
            return NULL_LAYER

    return read


def _message(exc: Exception) -> str:
    from src_model.errors import RefSAMError

    # Our own errors already name file and frame; others get their type for context.
    return str(exc) if isinstance(exc, (RefSAMError, OSError)) else f"{type(exc).__name__}: {exc}"


def _folder_kind(path: Path) -> str | None:
    """'labels' for an exported palette-PNG folder, 'video' for a folder of frames (or an empty
    one: the video reader names the problem), else None."""
    try:
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]  # .DS_Store & co.
    except OSError:
        return None
    files = sorted(p for p in entries if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        # An empty folder is ours to explain ("has no frames"): no reader can open it. A folder with
        # other things in it (a zarr store, other data) is refused, so napari tries other plugins.
        return None if entries else "video"
    if (path / "expressions.json").is_file():
        return "labels"
    pngs = [p for p in files if p.suffix.lower() == ".png"]
    if pngs and len(pngs) == len(files):
        try:
            from PIL import Image

            with Image.open(pngs[0]) as image:
                # Exported label frames are palette images; frames of a video are RGB or grey.
                if image.mode == "P":
                    return "labels"
        except OSError:
            return "video"  # let the video reader name the broken file
    return "video"


def _is_refsam_tiff(path: Path) -> bool:
    try:
        from src_model.export.tiff import read_tiff_metadata

        return bool(read_tiff_metadata(path))
    except Exception:  # noqa: BLE001 - not ours (or unreadable): the video reader reports it
        return False


def lazy_frames(source):
    """A dask array over ``source.get_raw``: one chunk per frame, read only when displayed.

    (T, H, W) for grey, (T, H, W, C) for colour; a single channel axis is dropped. A frame that
    cannot be read (a truncated or damaged file) shows as zeros, with one warning per video:
    napari reads chunks while slicing, where an exception would end up in its event loop.
    """
    import dask.array as da

    shape = source.raw_shape
    squeeze = len(shape) == 4 and shape[3] == 1
    frame_shape = shape[1:3] if squeeze else shape[1:]
    dtype = source.raw_dtype
    warned, lock = [False], threading.Lock()

    def block(index_block):
        t = int(index_block[0])
        try:
            frame = np.asarray(source.get_raw(t))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            with lock:
                first, warned[0] = not warned[0], True
            if first:
                _warn_unreadable(source, t, exc)
            return np.zeros((1, *frame_shape), dtype)
        return (frame[..., 0] if squeeze else frame)[None]

    indices = da.arange(shape[0], chunks=1)
    new_axes = list(range(1, 1 + len(frame_shape)))
    return da.map_blocks(
        block, indices, new_axis=new_axes, chunks=((1,) * shape[0], *((n,) for n in frame_shape)),
        dtype=dtype, meta=np.empty((0,) * (1 + len(frame_shape)), dtype=dtype),
    )


def _warn_unreadable(source, t: int, exc: Exception) -> None:
    from napari.utils.notifications import show_warning

    where = getattr(source, "path", None) or source.name
    show_warning(f"RefSAM: frame {t} of {where} cannot be read; it is shown blank, as is any other "
                 f"unreadable frame of this video ({_message(exc)})")


def read_video(path) -> list:
    """Layer data for a video / TIFF stack / frame folder (raises the engine's errors)."""
    from src_model.video.source import open_video

    source = open_video(path)
    data = lazy_frames(source)
    rgb = data.ndim == 4 and data.shape[-1] in (3, 4)
    kwargs = {
        "name": source.name,
        "rgb": rgb,
        "axis_labels": AXIS_LABELS,
        "metadata": {SOURCE_KEY: str(Path(path).resolve()), NAME_KEY: source.name},
    }
    if source.raw_dtype not in (np.uint8, np.bool_):
        # napari would otherwise scan the whole lazy array for its range.
        kwargs["contrast_limits"] = list(source.contrast_limits)
    return [(data, kwargs, "image")]


def read_labels_export(path) -> list:
    """Layer data for a napari-refsam label export (TIFF / COCO JSON / palette-PNG folder)."""
    from src_model.export import read_labels

    labels, expressions = read_labels(path)
    name = Path(path).stem or Path(path).name
    meta = {"name": name, "axis_labels": AXIS_LABELS, "metadata": {EXPRESSIONS_KEY: expressions}}
    return [(labels, meta, "labels")]
