"""Export label volumes (and their referring expressions) and read them back.

Shared by the CLI (``refsam segment -o ...``) and the napari writers. The format follows the path:

===================  ==========================================================================
``*.tif``/``*.tiff``  multi-page TIFF, uint16 ImageJ hyperstack (uint32 plain TIFF above 65535)
``*.json``            COCO / YouTube-VIS style JSON with RLE masks
``folder/`` or a      one DAVIS palette PNG per frame (``00000.png``...), ids <= 255,
path without suffix   plus ``expressions.json``
===================  ==========================================================================

Every write is atomic (temporary sibling, fsync, rename) and refuses to replace an existing
target unless ``overwrite=True`` (``OutputExistsError``, a ``FileExistsError``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import OutputExistsError
from ._common import is_dir_target, refuse_ending_only
from .coco import read_coco, write_coco
from .png import read_png_folder, write_png_folder
from .tiff import read_tiff, write_tiff

__all__ = [
    "EXPORT_FORMATS",
    "OutputExistsError",
    "format_for_path",
    "read_labels",
    "write_labels",
    "write_dataset_video",
]

# name -> (suffixes, one-line description); a folder target has no suffix.
EXPORT_FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "tiff": ((".tif", ".tiff"), "multi-page TIFF label stack (Fiji/ImageJ time series)"),
    "coco": ((".json",), "COCO / YouTube-VIS JSON with RLE masks and expressions"),
    "png": ((), "folder of DAVIS palette PNGs, one per frame (ids <= 255)"),
}

_WRITERS = {"tiff": write_tiff, "coco": write_coco, "png": write_png_folder}
_READERS = {"tiff": read_tiff, "coco": read_coco, "png": read_png_folder}


def format_for_path(path: str | os.PathLike) -> str:
    """The ``EXPORT_FORMATS`` name for ``path`` (ValueError naming the supported endings)."""
    if is_dir_target(path):
        return "png"
    suffix = Path(path).suffix.lower()
    for name, (suffixes, _) in EXPORT_FORMATS.items():
        if suffix in suffixes:
            return name
    raise ValueError(
        f"cannot tell the export format of {os.fspath(path)!r} from its ending {suffix!r}: use .tif/.tiff "
        "(TIFF stack), .json (COCO / YouTube-VIS) or a folder path ending in '/' (palette PNGs)"
    )


def write_labels(
    path: str | os.PathLike,
    labels,
    expressions: dict | None = None,
    overwrite: bool = False,
    fps: float | None = None,
    video_name: str | None = None,
) -> Path:
    """Write a (T, H, W) integer label volume in the format ``path`` names; returns the written path.

    labels: array, memmap or any array-like indexable by frame (read one frame at a time).
    expressions: ``{obj_id: [str, ...]}`` or None. fps / video_name: stored where the format can.
    Raises ``OutputExistsError`` for an existing target without ``overwrite``, ValueError for
    labels the format cannot hold or a ``path`` naming no file (``x/.tif``), OSError naming
    ``path`` when the disk or folder refuses.
    """
    refuse_ending_only(path, "writing labels to", png="give a folder path ending in '/'")
    writer = _WRITERS[format_for_path(path)]
    return writer(path, labels, expressions, overwrite=overwrite, fps=fps, video_name=video_name)


def read_labels(path: str | os.PathLike) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Read labels written by ``write_labels`` (or any file of the same format) back.

    Returns ``(labels (T, H, W) uint16, or uint32 when an id exceeds 65535, {obj_id: [str, ...]})``;
    the dict is empty when the file has no expressions. An existing folder is read as PNG frames.
    """
    kind = "png" if Path(path).is_dir() else format_for_path(path)
    return _READERS[kind](path)


def write_dataset_video(root, name, frames, labels, expressions, overwrite: bool = False, **kwargs):
    """Add one video to a Ref-YouTube-VOS style dataset folder; returns its frame folder.

    Delegates to ``data.ytvos.write_video`` (frames (T, H, W, 3) uint8, labels ids <= 255, extra
    keywords such as ``jpeg_quality`` passed through). Imported on call, keeping the dataset code
    out of plain label exports.
    """
    from ..data.ytvos import write_video

    return write_video(root, name, frames, labels, expressions, overwrite=overwrite, **kwargs)
