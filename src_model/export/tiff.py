"""Label volumes as multi-page TIFF: one page per frame, opened by Fiji as a time series.

Layout written:
- ids <= 65535: uint16 ImageJ hyperstack (axes TYX, ``frames=T``), uncompressed because ImageJ's
  own opener reads neither compressed nor BigTIFF hyperstacks. Fiji opens it by drag and drop.
  Above 4 GiB tifffile writes ImageJ's "truncated" variant (one IFD, data contiguous), which
  ImageJ and tifffile read in full but other TIFF readers see as a single page.
- ids > 65535: ImageJ has no uint32 type, so a plain (tifffile "shaped") uint32 TIFF, axes TYX in
  its JSON ImageDescription, BigTIFF when over 4 GiB. Fiji opens it through Bio-Formats.
- Expressions, fps and the video name ride along as JSON: in the ImageJ "Properties" (key
  ``refsam``) for uint16 files, in the shaped JSON description (key ``refsam``) for uint32 files.
  The ImageJ "Info" text repeats the expressions in readable form (Fiji: Image > Show Info).

Frames are written one at a time, so a memmapped video is never loaded as a whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import DatasetFormatError
from ._common import check_expressions, check_labels, frames_as, label_dtype, naming_path, to_label_dtype

__all__ = ["write_tiff", "read_tiff", "read_tiff_metadata", "META_KEY"]

META_KEY = "refsam"
# Classic TIFF offsets are 32-bit; leave room for the IFDs and the description.
_CLASSIC_LIMIT = 2**32 - 2**25


def _metadata_json(expressions: dict[int, list[str]], fps, video_name) -> dict:
    meta: dict = {"expressions": {str(k): v for k, v in sorted(expressions.items())}}
    if fps is not None:
        meta["fps"] = float(fps)
    if video_name is not None:
        meta["video_name"] = str(video_name)
    return meta


def _info_text(meta: dict) -> str:
    lines = ["napari-refsam labels (0 = background, other values = object ids)"]
    if "video_name" in meta:
        lines.append(f"video: {meta['video_name']}")
    for obj, texts in meta["expressions"].items():
        lines.append(f"object {obj}: " + " | ".join(" ".join(t.split()) for t in texts))  # one line each
    return "\n".join(lines)


def write_tiff(
    path: str | os.PathLike,
    labels,
    expressions: dict | None = None,
    overwrite: bool = False,
    fps: float | None = None,
    video_name: str | None = None,
) -> Path:
    """Write ``labels`` (T, H, W) integer ids to a multi-page TIFF at ``path``; returns the path.

    uint16 ImageJ hyperstack when every id fits, otherwise a plain uint32 TIFF (see module doc).
    Atomic: written to a temporary sibling and renamed; refuses an existing ``path`` unless
    ``overwrite`` (raises ``OutputExistsError``).
    """
    import tifffile

    labels, max_id = check_labels(labels)
    expressions = check_expressions(expressions)
    dtype = label_dtype(max_id)
    shape = tuple(labels.shape)
    meta = _metadata_json(expressions, fps, video_name)
    # ASCII JSON: ImageJ's description must be 7-bit; non-ASCII text survives as \\u escapes.
    meta_text = json.dumps(meta, ensure_ascii=True)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    with naming_path(path), atomic_path(path, overwrite=overwrite) as tmp:
        if dtype == np.uint16:
            ij_meta = {
                # An explicit length-1 sample axis: otherwise tifffile takes a width of 1 for one
                # sample per pixel and writes a single, misread page (same bytes for other widths).
                "axes": "TYXS",
                "Properties": {META_KEY: meta_text},
                "Info": _info_text(meta).encode("ascii", "backslashreplace").decode("ascii"),
                # Display range covering every id, so Fiji does not show the labels as near-black.
                "min": 0,
                "max": max(max_id, 1),
            }
            if fps:
                ij_meta.update(fps=float(fps), finterval=1.0 / float(fps))
            # ImageJ has no uint32: larger ids get a plain TIFF (BigTIFF past 4 GiB).
            format_options = {"imagej": True, "metadata": ij_meta}
            stored_shape = (*shape, 1)
        else:
            format_options = {"bigtiff": nbytes > _CLASSIC_LIMIT, "metadata": {"axes": "TYX", META_KEY: meta}}
            stored_shape = shape
        tifffile.imwrite(
            tmp,
            frames_as(labels, dtype),
            shape=stored_shape,
            dtype=dtype,
            # Explicit: tifffile would take a 3- or 4-frame video for one RGB(A) image.
            photometric="minisblack",
            **format_options,
        )
    return Path(path)


def _open(path: Path):
    import tifffile

    if not path.is_file():
        raise FileNotFoundError(f"label TIFF {path} does not exist")
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: not a readable TIFF file ({exc})") from None


def _refsam_meta(tif, path: Path) -> dict:
    raw = None
    if tif.is_imagej:
        raw = (tif.imagej_metadata or {}).get("Properties", {}).get(META_KEY)
    elif tif.is_shaped and tif.shaped_metadata:
        raw = tif.shaped_metadata[0].get(META_KEY)
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}: the '{META_KEY}' metadata is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DatasetFormatError(f"{path}: the '{META_KEY}' metadata is not a JSON object")
    return raw


def read_tiff_metadata(path: str | os.PathLike) -> dict:
    """The JSON written beside the pixels: ``{"expressions": {...}, "fps"?, "video_name"?}``, or {}."""
    path = Path(path)
    with _open(path) as tif:
        return _refsam_meta(tif, path)


def _to_volume(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Bring a series to (T, H, W): drop length-1 axes other than Y and X."""
    if "S" in axes and data.shape[axes.index("S")] > 1:
        raise DatasetFormatError(
            f"{path}: holds colour samples (axes {axes}, shape {data.shape}); expected one channel of object ids"
        )
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep])
    if data.ndim == 2:
        return data[None]
    if data.ndim != 3:
        raise DatasetFormatError(
            f"{path}: series has axes {axes} and shape {data.shape}; expected frames x height x width"
        )
    return data


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Read a label TIFF back: ``(labels (T, H, W) uint16 or uint32, {obj_id: [str, ...]})``.

    Any single-channel integer TIFF is accepted (a 2-D image becomes one frame); expressions are
    empty unless the file was written by ``write_tiff``.
    """
    path = Path(path)
    with _open(path) as tif:
        series = tif.series[0]
        data = _to_volume(series.asarray(), series.axes, path)
        meta = _refsam_meta(tif, path)
    labels = to_label_dtype(data, str(path))
    try:
        expressions = check_expressions(meta.get("expressions"))
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: bad expressions metadata: {exc}") from None
    return labels, expressions
