"""SAM-style prompts from napari layers: rectangles (and ellipses, polygons: their bounding box) of
a Shapes layer, clicks of a Points layer (negative ones where its ``positive`` feature is False,
or its ``label`` feature 0: ``add_clicks_layer`` makes such a layer).

Coordinates go layer data -> world -> video-layer data, so prompts line up with the video even
when the layers have different scales or offsets. Only prompts on the given frame count (a 2-D
prompt layer applies to every frame). Boxes are clipped to the frame: napari puts pixel edges at
-0.5, so a rectangle dragged from the image corner starts just outside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX_KINDS = ("rectangle", "ellipse", "polygon")


@dataclass
class Prompt:
    """One object to add: a box (x0, y0, x1, y1) and/or points [(x, y)] with labels 1/0."""
    box: tuple | None = None
    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    # (layer, the shape's vertices or the point's coordinates) removed once the object exists:
    # found again by value, since the layer may be edited while the object is being made.
    sources: list = field(default_factory=list)


def frame_size(video_layer) -> tuple[int, int]:
    """(height, width) of the video layer's frames."""
    data = video_layer.data[0] if video_layer.multiscale else video_layer.data
    shape = data.shape[:-1] if video_layer.rgb else data.shape
    return int(shape[-2]), int(shape[-1])


def _to_video_yx(layer, coords: np.ndarray, video_layer) -> np.ndarray:
    """(N, D) layer coordinates -> (N, 3) (t, y, x) in the video layer's data coordinates; t is
    NaN for a 2-D prompt layer over a (T, H, W) video (it applies to every frame)."""
    out = []
    for c in coords:
        world = np.asarray(layer.data_to_world(c), dtype=float)
        missing = max(0, video_layer.ndim - world.size)
        # Zeros, not NaN, through the transform: its matrix product would spread a NaN to y and x.
        world = np.concatenate([np.zeros(missing), world])[-video_layer.ndim:]
        data = np.asarray(video_layer.world_to_data(world), dtype=float)
        if data.size < 3:  # a single-image video layer
            data = np.concatenate([[0.0], data[-2:]])
        elif missing:
            data = np.concatenate([[np.nan], data[-2:]])
        out.append(data[:3])
    return np.asarray(out, dtype=float).reshape(-1, 3)


def _on_frame(tyx: np.ndarray, frame: int) -> bool:
    t = tyx[:, 0]
    return bool(np.all(np.isnan(t)) or np.all(np.round(t) == frame))


CLICKS_LAYER = "RefSAM clicks"
CLICKS_TAG = "refsam_clicks"  # in the layer's metadata: the widget's Negative clicks acts on it
CLICK_COLOURS = {True: "limegreen", False: "red"}  # on the object / not on it


def add_clicks_layer(viewer, video_layer, positive: bool = True):
    """A Points layer for clicks over ``video_layer``, in add mode: each click lands on the frame
    shown, green on the object, red off it (``set_click_sign`` picks which the next clicks are)."""
    height, width = frame_size(video_layer)
    ndim = video_layer.ndim
    layer = viewer.add_points(
        np.zeros((0, ndim)), ndim=ndim, name=CLICKS_LAYER, features={"positive": np.zeros(0, bool)},
        face_color="positive", face_color_cycle=CLICK_COLOURS, border_color="white",
        size=max(3.0, min(height, width) / 40), scale=video_layer.scale, translate=video_layer.translate,
        metadata={CLICKS_TAG: True})
    set_click_sign([layer], positive)
    layer.mode = "add"
    return layer


def is_clicks_layer(layer) -> bool:
    """A layer made by ``add_clicks_layer`` (the user's own Points layers are left as they are)."""
    return bool(getattr(layer, "metadata", {}).get(CLICKS_TAG)) and "positive" in layer.features.columns


def next_click_positive(layer) -> bool:
    """Whether the next click in clicks layer ``layer`` is positive (napari copies a selected
    point's features into the defaults, so this follows selections too)."""
    defaults = layer.feature_defaults
    return bool(defaults["positive"].iloc[0]) if len(defaults) else True


def set_click_sign(layers, positive: bool) -> None:
    """Make the next clicks of every clicks layer positive or negative; clicks already made keep theirs."""
    for layer in layers:
        if is_clicks_layer(layer) and next_click_positive(layer) != bool(positive):
            defaults = layer.feature_defaults.iloc[0].to_dict() if len(layer.feature_defaults) else {}
            layer.feature_defaults = {**defaults, "positive": bool(positive)}


def _point_labels(layer, count: int) -> list[int]:
    """1 = foreground, 0 = background: a boolean ``positive`` or an integer ``label`` feature."""
    features = getattr(layer, "features", None)
    if features is not None and len(features) == count:
        if "positive" in features:
            return [1 if bool(v) else 0 for v in features["positive"]]
        if "label" in features:
            return [1 if int(v) > 0 else 0 for v in features["label"]]
    return [1] * count


def collect_prompts(layers, video_layer, frame: int) -> tuple[list[Prompt], list[str]]:
    """One Prompt per box on ``frame``; points inside a box refine it, the rest form one object.
    Also returns what was left out and why (boxes and clicks outside the frame, empty boxes)."""
    from napari.layers import Points, Shapes

    height, width = frame_size(video_layer)
    boxes: list[Prompt] = []
    loose = Prompt()
    skipped: list[str] = []
    for layer in layers:
        if isinstance(layer, Shapes):
            for verts, kind in zip(layer.data, layer.shape_type):
                if kind not in BOX_KINDS:
                    continue
                tyx = _to_video_yx(layer, np.asarray(verts), video_layer)
                if not _on_frame(tyx, frame):
                    continue
                x0, x1 = np.clip([tyx[:, 2].min(), tyx[:, 2].max()], 0, width)
                y0, y1 = np.clip([tyx[:, 1].min(), tyx[:, 1].max()], 0, height)
                if x1 - x0 < 1 or y1 - y0 < 1:
                    skipped.append(f"a {kind} of '{layer.name}' (empty, or outside the {width}x{height} frame)")
                    continue
                boxes.append(Prompt(box=(float(x0), float(y0), float(x1), float(y1)),
                                    sources=[(layer, np.array(verts))]))
        elif isinstance(layer, Points) and len(layer.data):
            tyx = _to_video_yx(layer, np.asarray(layer.data), video_layer)
            labels = _point_labels(layer, len(tyx))
            for coords, p, lab in zip(layer.data, tyx, labels):
                if not _on_frame(p[None], frame):
                    continue
                x, y = float(p[2]), float(p[1])
                if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):  # off the image
                    skipped.append(f"a click of '{layer.name}' at ({x:.0f}, {y:.0f}), outside the "
                                   f"{width}x{height} frame")
                    continue
                x, y = min(max(x, 0.0), width), min(max(y, 0.0), height)
                owner = next((b for b in boxes if b.box[0] <= x <= b.box[2] and b.box[1] <= y <= b.box[3]), None)
                target = owner or loose
                target.points.append((x, y))
                target.labels.append(lab)
                target.sources.append((layer, np.array(coords)))
    if loose.points and any(lab == 1 for lab in loose.labels):
        boxes.append(loose)
    elif loose.points:  # only "not the object" clicks outside every box: nothing says what the object is
        skipped.append(f"{len(loose.points)} negative click(s) outside any box, with no positive click "
                       "to go with them (add a green click on the object, or draw a box round it)")
    return boxes, skipped


def consume(prompts: list[Prompt]) -> None:
    """Remove the shapes and points that became objects, so a second click adds nothing twice.
    Matched by value: shapes added, moved or deleted meanwhile are left as the user made them."""
    from napari.layers import Points, Shapes

    by_layer: dict = {}
    for prompt in prompts:
        for layer, value in prompt.sources:
            by_layer.setdefault(id(layer), (layer, []))[1].append(value)
    for layer, values in by_layer.values():
        if not isinstance(layer, (Points, Shapes)):
            continue
        items = list(layer.data)
        found = set()
        for value in values:
            index = next((i for i, item in enumerate(items) if i not in found
                          and np.shape(item) == value.shape and np.array_equal(item, value)), None)
            if index is not None:
                found.add(index)
        if found:
            # Selecting points copies their features into the layer's defaults (napari): the
            # next clicks must keep the sign the user chose, not take the used clicks' one.
            defaults = layer.feature_defaults.copy() if isinstance(layer, Points) else None
            layer.selected_data = found
            layer.remove_selected()
            if defaults is not None:
                layer.feature_defaults = defaults
