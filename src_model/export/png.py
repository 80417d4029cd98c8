"""Label volumes as a folder of DAVIS-style palette PNGs, one per frame.

Layout: ``<folder>/00000.png, 00001.png, ...`` — mode "P" images whose pixel values are object ids
(0 = background) coloured with the DAVIS palette, the format DAVIS, YouTube-VOS and most VOS
tools read and write. Ids therefore stop at 255. Expressions, fps and the video name, when given,
go to ``<folder>/expressions.json`` as ``{"expressions": {"1": ["..."]}, "fps": .., "video_name": ..}``.

The folder is built under a temporary name and renamed into place, so a failed export leaves no
half-written folder.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir
from ..errors import DatasetFormatError
from ..data.ytvos import davis_palette
from ._common import check_expressions, check_labels, load_json, naming_path, to_label_dtype

__all__ = ["write_png_folder", "read_png_folder", "META_NAME", "MAX_PNG_ID"]

META_NAME = "expressions.json"
MAX_PNG_ID = 255
# Modes whose pixel values are ids: palette indices, 8/16/32-bit grey, bilevel.
_ID_MODES = {"P", "L", "I;16", "I;16B", "I;16L", "I", "1"}


def write_png_folder(
    path: str | os.PathLike,
    labels,
    expressions: dict | None = None,
    overwrite: bool = False,
    fps: float | None = None,
    video_name: str | None = None,
) -> Path:
    """Write ``labels`` (T, H, W) with ids <= 255 as ``path/00000.png ...``; returns the folder.

    Raises ValueError naming the largest id when it does not fit a palette PNG; refuses an
    existing ``path`` unless ``overwrite`` (``OutputExistsError``).
    """
    from PIL import Image

    labels, max_id = check_labels(labels)
    if max_id > MAX_PNG_ID:
        raise ValueError(
            f"palette PNG frames hold object ids up to {MAX_PNG_ID}, but these labels hold id {max_id}; "
            "export to .tif or .json instead"
        )
    expressions = check_expressions(expressions)
    palette = davis_palette().reshape(-1).tolist()  # the one DAVIS palette, shared with the dataset writer
    path = Path(path)
    with naming_path(path), atomic_dir(path, overwrite=overwrite, replaceable=is_png_export_file) as tmp:
        for t in range(len(labels)):
            image = Image.fromarray(np.ascontiguousarray(np.asarray(labels[t]), dtype=np.uint8))
            image.putpalette(palette)  # turns the "L" image into a "P" one, values unchanged
            image.save(tmp / f"{t:05d}.png", optimize=False)
        if expressions or fps is not None or video_name is not None:
            meta: dict = {"expressions": {str(k): v for k, v in sorted(expressions.items())}}
            if fps is not None:
                meta["fps"] = float(fps)
            if video_name is not None:
                meta["video_name"] = str(video_name)
            (tmp / META_NAME).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def is_png_export_file(name: str) -> bool:
    """Whether a file name is one this writer puts in its folder (frames and the metadata file)."""
    return name == META_NAME or re.fullmatch(r"\d+\.png", name) is not None


def _natural_key(name: str) -> list:
    # 2.png before 10.png for folders not written with zero padding.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_png_folder(path: str | os.PathLike) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Read a folder of palette or greyscale PNGs: ``(labels (T, H, W) uint16/uint32, expressions)``.

    Frames are the folder's ``*.png`` files in natural name order. Every frame must have the size
    of the first and hold ids (palette "P" or greyscale), else ``DatasetFormatError`` naming the file.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"PNG label folder {path} does not exist or is not a folder")
    files = sorted((p for p in path.iterdir() if p.suffix.lower() == ".png"), key=lambda p: _natural_key(p.name))
    if not files:
        raise DatasetFormatError(f"{path}: no .png frames in the folder")

    frames = []
    first_size = None
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
        except OSError as exc:
            raise DatasetFormatError(f"{file}: not a readable PNG ({exc})") from None
        if image.mode not in _ID_MODES:
            raise DatasetFormatError(
                f"{file}: PNG mode is {image.mode}; expected a palette (P) or greyscale (L) image of object ids"
            )
        if first_size is None:
            first_size = image.size
        elif image.size != first_size:
            raise DatasetFormatError(
                f"{file}: frame is {image.size[0]}x{image.size[1]} pixels but {files[0].name} is "
                f"{first_size[0]}x{first_size[1]}; all frames must have the same size"
            )
        frames.append(np.asarray(image))
    labels = to_label_dtype(np.stack(frames), str(path))

    expressions: dict[int, list[str]] = {}
    meta_file = path / META_NAME
    if meta_file.is_file():
        meta = load_json(meta_file, "the expressions file")
        if not isinstance(meta, dict) or not isinstance(meta.get("expressions", {}), dict):
            raise DatasetFormatError(f"{meta_file}: expected {{\"expressions\": {{\"<obj_id>\": [\"...\"]}}}}")
        try:
            expressions = check_expressions(meta.get("expressions"))
        except ValueError as exc:
            raise DatasetFormatError(f"{meta_file}: {exc}") from None
    return labels, expressions
