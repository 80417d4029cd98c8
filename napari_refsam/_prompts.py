"""SAM-style prompts from napari layers: rectangles of a Shapes layer, clicks of a Points layer.

Coordinates go layer data -> world -> video-layer data, so prompts line up with the video even
when the layers have different scales or offsets. Only prompts on the given frame count (a 2-D
prompt layer applies to every frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prompt:
    """One object to add: a box (x0, y0, x1, y1) and/or points [(x, y)] with labels 1/0."""
    box: tuple | None = None
    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    sources: list = field(default_factory=list)  # (layer, index) pairs removed once the object exists


def _to_video_yx(layer, coords: np.ndarray, video_layer) -> np.ndarray:
    """(N, D) layer coordinates -> (N, 3) (t, y, x) in the video layer's data coordinates."""
    out = []
    for c in coords:
        world = np.asarray(layer.data_to_world(c), dtype=float)
        if world.size < video_layer.ndim:  # a 2-D prompt layer over a (T, H, W) video
            world = np.concatenate([np.full(video_layer.ndim - world.size, np.nan), world])
        data = np.asarray(video_layer.world_to_data(world[-video_layer.ndim:]), dtype=float)
        out.append(data[:3] if data.size >= 3 else np.concatenate([[np.nan], data[:2]]))
    return np.asarray(out, dtype=float).reshape(-1, 3)


def _on_frame(tyx: np.ndarray, frame: int) -> bool:
    t = tyx[:, 0]
    return bool(np.all(np.isnan(t)) or np.all(np.round(t) == frame))


def _point_labels(layer, count: int) -> list[int]:
    """1 = foreground, 0 = background: a boolean ``positive`` or an integer ``label`` feature."""
    features = getattr(layer, "features", None)
    if features is not None and len(features) == count:
        if "positive" in features:
            return [1 if bool(v) else 0 for v in features["positive"]]
        if "label" in features:
            return [1 if int(v) > 0 else 0 for v in features["label"]]
    return [1] * count


def collect_prompts(layers, video_layer, frame: int) -> list[Prompt]:
    """One Prompt per rectangle on ``frame``; points inside a box refine it, the rest form one object."""
    from napari.layers import Points, Shapes

    boxes: list[Prompt] = []
    loose = Prompt()
    for layer in layers:
        if isinstance(layer, Shapes):
            for i, (verts, kind) in enumerate(zip(layer.data, layer.shape_type)):
                if kind not in ("rectangle", "polygon"):
                    continue
                tyx = _to_video_yx(layer, np.asarray(verts), video_layer)
                if not _on_frame(tyx, frame):
                    continue
                y0, x0 = tyx[:, 1].min(), tyx[:, 2].min()
                y1, x1 = tyx[:, 1].max(), tyx[:, 2].max()
                boxes.append(Prompt(box=(float(x0), float(y0), float(x1), float(y1)), sources=[(layer, i)]))
        elif isinstance(layer, Points) and len(layer.data):
            tyx = _to_video_yx(layer, np.asarray(layer.data), video_layer)
            labels = _point_labels(layer, len(tyx))
            for i, (p, lab) in enumerate(zip(tyx, labels)):
                if not _on_frame(p[None], frame):
                    continue
                x, y = float(p[2]), float(p[1])
                owner = next((b for b in boxes if b.box[0] <= x <= b.box[2] and b.box[1] <= y <= b.box[3]), None)
                target = owner or loose
                target.points.append((x, y))
                target.labels.append(lab)
                target.sources.append((layer, i))
    if loose.points and any(lab == 1 for lab in loose.labels):
        boxes.append(loose)
    return boxes


def consume(prompts: list[Prompt]) -> None:
    """Remove the shapes and points that became objects, so a second click adds nothing twice."""
    from napari.layers import Points, Shapes

    by_layer: dict = {}
    for prompt in prompts:
        for layer, index in prompt.sources:
            by_layer.setdefault(id(layer), (layer, set()))[1].add(index)
    for layer, indices in by_layer.values():
        if isinstance(layer, (Points, Shapes)):
            layer.selected_data = set(indices)
            layer.remove_selected()
