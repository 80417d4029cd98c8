"""Label volumes as COCO-style JSON in the YouTube-VIS layout (one video per file).

Written::

    {"info": {...}, "licenses": [],
     "videos": [{"id": 1, "name": .., "file_names": ["<name>/00000.jpg", ..], "width": W, "height": H,
                 "length": T, "fps"?: ..}],
     "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
     "annotations": [{"id": k, "video_id": 1, "category_id": 1, "track_id": obj_id,
                      "segmentations": [RLE or null per frame], "areas": [int or null],
                      "bboxes": [[x, y, w, h] or null], "iscrowd": 0, "height": H, "width": W,
                      "expressions": ["...", ..]}]}

One annotation per object: every id found in the labels, plus every id that only has expressions
(an object that is empty in every frame keeps its expressions). RLEs are COCO compressed strings
(see ``rle.py``); the reader also takes uncompressed RLE and, with pycocotools, polygons.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import DatasetFormatError
from ._common import check_expressions, check_labels, label_dtype, load_json, naming_path
from .rle import _mask_utils, decode_rle, encode_rle, mask_bbox

__all__ = ["write_coco", "read_coco"]


def _annotations(labels, compressed_rle: bool) -> dict[int, dict[int, tuple]]:
    """{obj_id: {frame: (rle, area, bbox)}} for every id present, one frame of ``labels`` at a time."""
    found: dict[int, dict[int, tuple]] = {}
    for t in range(len(labels)):
        frame = np.asarray(labels[t])
        for obj in np.unique(frame):
            if obj == 0:
                continue
            mask = frame == obj
            found.setdefault(int(obj), {})[t] = (
                encode_rle(mask, compressed=compressed_rle),
                int(np.count_nonzero(mask)),
                mask_bbox(mask),
            )
    return found


def write_coco(
    path: str | os.PathLike,
    labels,
    expressions: dict | None = None,
    overwrite: bool = False,
    fps: float | None = None,
    video_name: str | None = None,
    compressed_rle: bool = True,
) -> Path:
    """Write ``labels`` (T, H, W) as YouTube-VIS style JSON at ``path``; returns the path.

    ``compressed_rle=False`` writes run lengths as plain lists (larger, but readable by tools that
    only know uncompressed RLE). Atomic; refuses an existing ``path`` unless ``overwrite``.
    """
    labels, _ = check_labels(labels)
    expressions = check_expressions(expressions)
    length, height, width = (int(v) for v in labels.shape)
    name = str(video_name) if video_name is not None else "video"
    per_object = _annotations(labels, compressed_rle)

    video = {
        "id": 1,
        "name": name,
        "file_names": [f"{name}/{t:05d}.jpg" for t in range(length)],
        "width": width,
        "height": height,
        "length": length,
    }
    if fps is not None:
        video["fps"] = float(fps)
    annotations = []
    for index, obj in enumerate(sorted(set(per_object) | set(expressions)), start=1):
        frames = per_object.get(obj, {})
        annotations.append(
            {
                "id": index,
                "video_id": 1,
                "category_id": 1,
                "track_id": obj,
                "segmentations": [frames[t][0] if t in frames else None for t in range(length)],
                "areas": [frames[t][1] if t in frames else None for t in range(length)],
                "bboxes": [frames[t][2] if t in frames else None for t in range(length)],
                "iscrowd": 0,
                "height": height,
                "width": width,
                "expressions": expressions.get(obj, []),
            }
        )
    document = {
        "info": {"description": "napari-refsam labels", "version": "1.0"},
        "licenses": [],
        "videos": [video],
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
        "annotations": annotations,
    }
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with naming_path(path), atomic_file(path, overwrite=overwrite, mode="wb") as handle:
        handle.write(payload)
    return Path(path)


def _require(container: dict, key: str, where: str, path: Path):
    if not isinstance(container, dict):
        raise DatasetFormatError(f"{path}: {where} is not a JSON object")
    if key not in container:
        raise DatasetFormatError(f"{path}: {where} has no '{key}' key")
    return container[key]


def _int(value, where: str, path: Path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{path}: {where} must be an integer, got {value!r}") from None


def _pick_video(videos: list, video_id, path: Path) -> dict:
    if not isinstance(videos, list) or not videos:
        raise DatasetFormatError(f"{path}: 'videos' must be a non-empty list")
    ids = [v.get("id") if isinstance(v, dict) else None for v in videos]
    if video_id is None:
        if len(videos) > 1:
            raise DatasetFormatError(f"{path}: holds {len(videos)} videos (ids {ids}); pass video_id to choose one")
        return videos[0]
    for video in videos:
        if isinstance(video, dict) and video.get("id") == video_id:
            return video
    raise DatasetFormatError(f"{path}: no video with id {video_id!r}; the file has ids {ids}")


def _decode(seg, height: int, width: int, where: str, path: Path) -> np.ndarray:
    if isinstance(seg, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        if _mask_utils is None:
            raise DatasetFormatError(f"{path}: {where} is a polygon; install pycocotools to read polygons")
        rles = _mask_utils.frPyObjects(seg, height, width)
        return _mask_utils.decode(_mask_utils.merge(rles)).astype(bool)
    if not isinstance(seg, dict):
        raise DatasetFormatError(f"{path}: {where} is neither an RLE object, a polygon list nor null")
    size = seg.get("size")
    if not isinstance(size, list) or size != [height, width]:
        raise DatasetFormatError(f"{path}: {where} has RLE size {size}, but the video is [{height}, {width}] (height, width)")
    try:
        return decode_rle(seg)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: {where}: {exc}") from None


def read_coco(path: str | os.PathLike, video_id=None) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Read one video of a YouTube-VIS style JSON: ``(labels (T, H, W) uint16/uint32, expressions)``.

    The object id is the annotation's ``track_id`` (our files) or its ``id`` (YouTube-VIS files).
    Where annotations overlap, the later one in the file wins. ``video_id`` picks a video when the
    file holds more than one. Malformed files raise ``DatasetFormatError`` naming the file and the
    key, annotation or frame at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    document = load_json(path, "the annotation file")
    video = _pick_video(_require(document, "videos", "the top level", path), video_id, path)
    annotations = _require(document, "annotations", "the top level", path)
    if not isinstance(annotations, list):
        raise DatasetFormatError(f"{path}: 'annotations' must be a list")
    vid = _require(video, "id", "the video", path)
    height = _int(_require(video, "height", f"video {vid}", path), f"video {vid} 'height'", path)
    width = _int(_require(video, "width", f"video {vid}", path), f"video {vid} 'width'", path)
    if "length" in video:
        length = _int(video["length"], f"video {vid} 'length'", path)
    else:
        length = len(_require(video, "file_names", f"video {vid} (no 'length')", path))

    mine = [(i, a) for i, a in enumerate(annotations) if isinstance(a, dict) and a.get("video_id") == vid]
    objects = []
    for i, ann in mine:
        obj = ann.get("track_id", ann.get("id"))
        if not isinstance(obj, int) or obj <= 0:
            raise DatasetFormatError(f"{path}: annotations[{i}] needs a positive integer 'track_id' or 'id', got {obj!r}")
        objects.append(obj)
    labels = np.zeros((length, height, width), dtype=label_dtype(max(objects, default=0)))
    expressions: dict[int, list[str]] = {}
    for (i, ann), obj in zip(mine, objects):
        segmentations = _require(ann, "segmentations", f"annotations[{i}]", path)
        if not isinstance(segmentations, list) or len(segmentations) != length:
            got = len(segmentations) if isinstance(segmentations, list) else type(segmentations).__name__
            raise DatasetFormatError(f"{path}: annotations[{i}] has {got} segmentations, but video {vid} has {length} frames")
        for t, seg in enumerate(segmentations):
            if seg is not None:
                labels[t][_decode(seg, height, width, f"annotations[{i}] frame {t}", path)] = obj
        texts = ann.get("expressions")
        if texts:
            try:
                expressions.update(check_expressions({obj: texts}))
            except ValueError as exc:
                raise DatasetFormatError(f"{path}: annotations[{i}]: {exc}") from None
    return labels, expressions
