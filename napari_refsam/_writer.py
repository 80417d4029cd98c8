"""npe2 writers for Labels layers: TIFF stack, COCO / YouTube-VIS JSON, folder of palette PNGs.

All three delegate to ``src_model.export.write_labels`` (atomic writes, the same files the CLI
makes). The referring expressions the RefSAM widget keeps in the layer metadata ride along.
napari's save dialog has already asked before replacing a file, so existing targets are replaced,
except the video the labels were made from (as the CLI refuses it).

Labels a format cannot hold raise ``RefSAMError`` with the engine's message: npe2 reads a writer's
ValueError as "this writer does not fit the path" and shows only "... is not a valid writer".
"""
from __future__ import annotations

from pathlib import Path

from ._reader import EXPRESSIONS_KEY, NAME_KEY, VIDEO_SOURCE_KEY


def _write(path, data, meta: dict) -> list[str]:
    from src_model.errors import RefSAMError
    from src_model.export import write_labels
    from src_model.export._common import refuse_ending_only, refuse_replacing_the_video

    metadata = (meta or {}).get("metadata") or {}
    video = metadata.get(VIDEO_SOURCE_KEY)
    if video:  # napari's dialog asks before replacing a file, not whether it is the video segmented
        refuse_replacing_the_video(video, path, "saving the labels to")
    expressions = metadata.get(EXPRESSIONS_KEY) or None
    if isinstance(data, list):  # a multiscale layer: the full-resolution level
        data = data[0]
    try:
        # napari turns save("folder/") into "folder/.tif" (the first writer's ending): refused here,
        # with the napari way to ask for PNG frames, rather than written as a hidden file.
        refuse_ending_only(path, "saving the labels to", png="name it labels.png (written as the folder labels/)")
        written = write_labels(path, data, expressions=expressions, overwrite=True,
                               video_name=metadata.get(NAME_KEY))
    except ValueError as exc:  # not a ValueError, which npe2 would swallow (see the module docstring)
        raise RefSAMError(str(exc)) from exc
    return [str(written)]


def _with_ending(path: str, endings: tuple[str, ...]) -> str:
    """napari's save dialog hands the chosen writer the name as typed: "labels" with the TIFF file
    type must still be a TIFF (without an ending the engine would write a PNG folder)."""
    return path if Path(path).suffix.lower() in endings else path + endings[0]


def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    """(T, H, W) labels -> multi-page uint16 TIFF (uint32 above 65535 ids), opened by Fiji."""
    return _write(_with_ending(path, (".tif", ".tiff")), data, meta)


def write_labels_coco(path: str, data, meta: dict) -> list[str]:
    """(T, H, W) labels -> COCO / YouTube-VIS JSON with RLE masks and expressions."""
    return _write(_with_ending(path, (".json",)), data, meta)


def write_labels_png(path: str, data, meta: dict) -> list[str]:
    """(T, H, W) labels -> a folder of DAVIS palette PNGs (ids <= 255).

    napari picks writers by file ending, so this one is chosen by ``.png``: saving ``labels.png``
    writes the folder ``labels/`` (``00000.png``, ``00001.png``, ... and ``expressions.json``).
    """
    target = Path(path)
    folder = target.with_suffix("") if target.suffix.lower() == ".png" else target
    return _write(str(folder) + "/", data, meta)
