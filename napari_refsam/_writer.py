"""npe2 writers for Labels layers: TIFF stack, COCO / YouTube-VIS JSON, folder of palette PNGs.

All three delegate to ``src_model.export.write_labels`` (atomic writes, the same files the CLI
makes). The referring expressions the RefSAM widget keeps in the layer metadata ride along.
napari's save dialog has already asked before replacing a file, so existing targets are replaced,
except the video the labels were made from (as the CLI refuses it).
"""
from __future__ import annotations

from pathlib import Path

from ._reader import EXPRESSIONS_KEY, NAME_KEY, VIDEO_SOURCE_KEY


def _write(path, data, meta: dict) -> list[str]:
    from src_model.export import write_labels
    from src_model.export._common import refuse_replacing_the_video

    metadata = (meta or {}).get("metadata") or {}
    video = metadata.get(VIDEO_SOURCE_KEY)
    if video:  # napari's dialog asks before replacing a file, not whether it is the video segmented
        refuse_replacing_the_video(video, path, "saving the labels to")
    expressions = metadata.get(EXPRESSIONS_KEY) or None
    if isinstance(data, list):  # a multiscale layer: the full-resolution level
        data = data[0]
    written = write_labels(path, data, expressions=expressions, overwrite=True,
                           video_name=metadata.get(NAME_KEY))
    return [str(written)]


def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    """(T, H, W) labels -> multi-page uint16 TIFF (uint32 above 65535 ids), opened by Fiji."""
    return _write(path, data, meta)


def write_labels_coco(path: str, data, meta: dict) -> list[str]:
    """(T, H, W) labels -> COCO / YouTube-VIS JSON with RLE masks and expressions."""
    return _write(path, data, meta)


def write_labels_png(path: str, data, meta: dict) -> list[str]:
    """(T, H, W) labels -> a folder of DAVIS palette PNGs (ids <= 255).

    napari picks writers by file ending, so this one is chosen by ``.png``: saving ``labels.png``
    writes the folder ``labels/`` (``00000.png``, ``00001.png``, ... and ``expressions.json``).
    """
    target = Path(path)
    folder = target.with_suffix("") if target.suffix.lower() == ".png" else target
    return _write(str(folder) + "/", data, meta)
