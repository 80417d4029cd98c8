"""Procedural referring videos: coloured shapes that move, turn and occlude each other.

A clip is a few textured shapes over a low-contrast background, with exact visible masks and
2-4 referring expressions per object that each pick out exactly one object. Everything is
decided by one ``numpy`` Generator, so a seed names a clip. Shapes are rasterised with
vectorised tests on a pixel grid (no per-pixel Python), so an 8-frame 128x128 clip takes a few
milliseconds.

Held-out validation: ``HOLDOUT_COMBOS`` (colour, shape) pairs never appear in training clips;
every holdout clip contains at least one of them, so validation measures generalisation to new
attribute combinations as well as to unseen clips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src_model.data import ytvos

from .expressions import describe_objects
from .vocabulary import BACKGROUNDS, COLOURS, HOLDOUT_COMBOS, SHAPES, SIZES, TEXTURES, rotation_visible

# A shape's pixels lie within this many radii of its centre (the triangle and star reach out).
_EXTENT = 1.2


@dataclass
class SyntheticClip:
    """One generated clip.

    frames: (T, H, W, 3) uint8. labels: (T, H, W) uint16 visible masks, ids 1..K in draw order
    (later ids in front), 0 = background. objects: {obj_id: {"shape", "color", "size",
    "texture", "turning", "velocity", "radius", "angle0", "omega", "expressions"}}; object k's
    angle in frame t is angle0 + omega * t and its centre is centres[k - 1, t].
    """
    name: str
    frames: np.ndarray
    labels: np.ndarray
    objects: dict[int, dict]
    seed: int = 0
    holdout: bool = False
    background: str = ""
    centres: np.ndarray = field(default=None, repr=False)  # (K, T, 2) x, y of each shape centre


# ----------------------------------------------------------------------------- rasterising
def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in object coordinates (radius 1, v pointing down); u, v: (h, w) -> bool."""
    au, av = np.abs(u), np.abs(v)
    rho2 = u * u + v * v
    if shape == "circle":
        return rho2 <= 1.0
    if shape == "ring":
        return (rho2 <= 1.0) & (rho2 >= 0.55 ** 2)
    if shape == "ellipse":
        return (u / 1.15) ** 2 + (v / 0.6) ** 2 <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.85
    if shape == "diamond":  # a rhombus taller than wide, so a turning square never looks like it
        return au / 0.8 + av / 1.15 <= 1.0
    if shape == "cross":
        return ((au <= 0.32) & (av <= 1.05)) | ((av <= 0.32) & (au <= 1.05))
    if shape == "hexagon":
        a = 1.05
        return (av <= 0.866 * a) & (1.732 * au + av <= 1.732 * a)
    if shape == "triangle":  # apex up, circumradius 1.2 so its area is close to the others'
        s = 1.2
        return (v <= 0.5 * s) & (au <= 0.577 * (v + s))
    if shape == "star":  # five points: the edge radius falls linearly between tips and notches
        phi = np.arctan2(u, -v)  # 0 = straight up
        t = np.abs(((phi * 5 / (2 * np.pi)) % 1.0) * 2 - 1)  # 1 at a tip, 0 at a notch
        return np.sqrt(rho2) <= 0.5 + 0.7 * t
    raise ValueError(f"unknown shape {shape!r}")


def _texture(obj: dict, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB of the object at object coordinates u, v (the pattern turns with the object): (h, w, 3)."""
    base = np.asarray(COLOURS[obj["color"]][0], np.float32)
    kind = obj["texture"]
    if kind == "flat":
        return np.broadcast_to(base, u.shape + (3,))
    if kind == "stripes":
        shade = np.where(np.floor(u * 2.5 + 10) % 2 == 0, 1.0, 0.6)
    elif kind == "dots":
        fu, fv = (u * 2.2) % 1.0 - 0.5, (v * 2.2) % 1.0 - 0.5
        shade = np.where(fu * fu + fv * fv < 0.06, 0.55, 1.0)
    else:  # "noise": blocky speckle from a hash of the cell, fixed to the object
        cell = np.sin(np.floor(u * 5) * 12.9898 + np.floor(v * 5) * 78.233) * 43758.5453
        shade = 0.75 + 0.35 * (cell - np.floor(cell))
    return np.clip(base * shade[..., None], 0, 255)


def _rasterise(obj: dict, centre: np.ndarray, angle: float, height: int, width: int):
    """Mask and colours of one object in one frame, on its bounding patch only.

    Returns (ys, xs, mask (h, w) bool, u, v (h, w) object coordinates) or None when the patch
    is empty; ``_texture(obj, u, v)`` gives the colours.
    """
    r = obj["radius"]
    cx, cy = float(centre[0]), float(centre[1])
    reach = _EXTENT * r + 1
    y0, y1 = max(int(cy - reach), 0), min(int(math.ceil(cy + reach)) + 1, height)
    x0, x1 = max(int(cx - reach), 0), min(int(math.ceil(cx + reach)) + 1, width)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / r
    dx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / r
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return slice(y0, y1), slice(x0, x1), _shape_mask(obj["shape"], u, v), u, v


def _upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (h, w, C) to (height, width, C)."""
    gh, gw = coarse.shape[:2]
    ys, xs = np.linspace(0, gh - 1, height), np.linspace(0, gw - 1, width)
    y0, x0 = np.minimum(ys.astype(int), gh - 2), np.minimum(xs.astype(int), gw - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _background(rng: np.random.Generator, kind: str, num_frames: int, height: int, width: int) -> np.ndarray:
    """Dull, low-contrast backgrounds with a slow camera pan and per-frame grain: (T, H, W, 3) float32."""
    pad = max(2, round(0.04 * min(height, width)))
    big_h, big_w = height + 2 * pad, width + 2 * pad
    base = rng.uniform(60, 150) + rng.uniform(-15, 15, 3)
    yy, xx = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    if kind == "noise":
        coarse = rng.uniform(-25, 25, (big_h // 16 + 2, big_w // 16 + 2, 3))
        img = base + _upsample(coarse, big_h, big_w)
    elif kind == "gradient":
        other = rng.uniform(60, 150) + rng.uniform(-15, 15, 3)
        a = rng.uniform(0, 2 * np.pi)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = ((t - t.min()) / max(float(np.ptp(t)), 1.0))[..., None]
        img = base * (1 - t) + other * t
    elif kind == "stripes":
        a, period = rng.uniform(0, np.pi), rng.uniform(8, 24)
        wave = np.sign(np.sin(2 * np.pi * (xx * math.cos(a) + yy * math.sin(a)) / period))
        img = base + 12 * wave[..., None]
    else:  # checker
        cell = int(rng.integers(8, 24))
        wave = ((yy // cell + xx // cell) % 2) * 2 - 1
        img = base + 12 * wave[..., None]
    pan = rng.uniform(-1, 1, 2) * pad / max(num_frames - 1, 1)
    out = np.empty((num_frames, height, width, 3), np.float32)
    for t in range(num_frames):
        ox, oy = (np.round(pad + pan * t)).astype(int)
        out[t] = img[oy:oy + height, ox:ox + width]
    out += rng.integers(-4, 5, out.shape).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- the scene
def _sample_objects(rng: np.random.Generator, count: int, holdout: bool, scale: float) -> list[dict]:
    """Attributes of ``count`` objects; (colour, shape, size) triples are unique in a clip."""
    allowed = [(c, s) for c in COLOURS for s in SHAPES if holdout or (c, s) not in HOLDOUT_COMBOS]
    forced = int(rng.integers(count)) if holdout else -1
    held = sorted(HOLDOUT_COMBOS)
    objects: list[dict] = []
    taken: set[tuple[str, str, str]] = set()
    while len(objects) < count:
        k = len(objects)
        if k == forced:
            colour, shape = held[int(rng.integers(len(held)))]
        elif objects and rng.random() < 0.2:
            # Same colour and shape as an earlier object: the expressions must then use size,
            # position or motion to tell them apart.
            twin = objects[int(rng.integers(k))]
            colour, shape = twin["color"], twin["shape"]
        else:
            colour, shape = allowed[int(rng.integers(len(allowed)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        if (colour, shape, size) in taken or (not holdout and (colour, shape) in HOLDOUT_COMBOS):
            continue
        taken.add((colour, shape, size))
        texture = TEXTURES[0] if rng.random() < 0.5 else TEXTURES[int(rng.integers(1, len(TEXTURES)))]
        omega = 0.0
        if rotation_visible(shape, texture) and rng.random() < 0.35:
            omega = float(rng.choice([-1, 1]) * rng.uniform(0.12, 0.3))
        objects.append({
            "color": colour, "shape": shape, "size": size, "texture": texture,
            "radius": SIZES[size] * scale * rng.uniform(0.95, 1.05), "omega": omega,
            # Untilted unless turning, so a square never passes for a diamond.
            "angle0": float(rng.uniform(-0.3, 0.3) if omega == 0 else rng.uniform(0, 2 * np.pi)),
        })
    return objects


def _sample_velocity(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Pixels per frame; a clear direction (or none) so motion words can be true."""
    kind = rng.choice(["static", "horizontal", "vertical", "diagonal"], p=[0.25, 0.3, 0.25, 0.2])
    unit = scale / 128  # speeds are in pixels of a 128-pixel frame
    speed, jitter = rng.uniform(1.2, 3.0) * unit, rng.uniform(-0.2, 0.2) * unit
    sign = rng.choice([-1.0, 1.0], 2)
    if kind == "static":
        return np.zeros(2)
    if kind == "horizontal":
        return np.array([sign[0] * speed, jitter])
    if kind == "vertical":
        return np.array([jitter, sign[1] * speed])
    return sign * speed / math.sqrt(2)


def _trajectory(start: np.ndarray, velocity: np.ndarray, lo: float, hi: np.ndarray, num_frames: int) -> np.ndarray:
    """(T, 2) centres moving at ``velocity``, bouncing off [lo, hi] per axis."""
    pos, vel = start.astype(float).copy(), velocity.astype(float).copy()
    out = np.empty((num_frames, 2))
    for t in range(num_frames):
        out[t] = pos
        pos = pos + vel
        for a in range(2):
            if pos[a] < lo:
                pos[a], vel[a] = 2 * lo - pos[a], -vel[a]
            elif pos[a] > hi[a]:
                pos[a], vel[a] = 2 * hi[a] - pos[a], -vel[a]
    return out


def _layout(rng: np.random.Generator, objects: list[dict], num_frames: int, height: int, width: int) -> np.ndarray:
    """Centres (K, T, 2) in x, y; about 40% of objects are aimed at an earlier one to occlude it."""
    scale = min(height, width)
    size = np.array([width, height], float)
    centres = np.empty((len(objects), num_frames, 2))
    for k, obj in enumerate(objects):
        margin = _EXTENT * obj["radius"]
        hi = size - 1 - margin
        vel = _sample_velocity(rng, scale)
        travel = vel * (num_frames - 1)
        # Start where the whole path fits, when it can, so most objects never bounce.
        lo_start = np.maximum(margin, margin - travel)
        hi_start = np.minimum(hi, hi - travel)
        lo_start, hi_start = np.minimum(lo_start, hi_start), np.maximum(lo_start, hi_start)
        start = np.clip(rng.uniform(lo_start, hi_start), margin, hi)
        if k > 0 and rng.random() < 0.4:
            j, mid = int(rng.integers(k)), num_frames // 2
            a = rng.uniform(0, 2 * np.pi)
            gap = (objects[j]["radius"] + obj["radius"]) * rng.uniform(0.5, 0.9)
            start = centres[j, mid] + gap * np.array([math.cos(a), math.sin(a)]) - vel * mid
            start = np.clip(start, margin, hi)
        centres[k] = _trajectory(start, vel, margin, hi, num_frames)
        obj["velocity"] = vel
    return centres


def _render(objects, centres, background, check_only=False):
    """Composite objects back to front. Returns (frames float, labels uint16, visible/full counts (K, T))."""
    num_frames, height, width = background.shape[:3]
    frames = background if check_only else background.copy()
    labels = np.zeros((num_frames, height, width), np.uint16)
    full = np.zeros((len(objects), num_frames), np.int64)
    for t in range(num_frames):
        for k, obj in enumerate(objects):
            hit = _rasterise(obj, centres[k, t], obj["angle0"] + obj["omega"] * t, height, width)
            if hit is None:
                continue
            ys, xs, mask, u, v = hit
            full[k, t] = mask.sum()
            labels[t, ys, xs][mask] = k + 1
            if not check_only:
                frames[t, ys, xs][mask] = _texture(obj, u, v)[mask]
    ids = labels.reshape(num_frames, -1)
    visible = np.stack([(ids == k + 1).sum(1) for k in range(len(objects))])
    return frames, labels, visible, full


def generate_clip(seed: int, num_frames: int = 8, size: tuple[int, int] = (128, 128),
                  num_objects: int | None = None, holdout: bool = False) -> SyntheticClip:
    """One referring clip, fully determined by (seed, holdout, num_frames, size, num_objects).

    size: (H, W). Train and holdout clips draw from different random streams, so the same seed
    gives unrelated clips.
    """
    height, width = int(size[0]), int(size[1])
    if num_frames < 1 or min(height, width) < 32:
        raise ValueError(f"need num_frames >= 1 and a size of at least 32x32, got {num_frames}, {size}")
    rng = np.random.default_rng([int(seed), 1 if holdout else 0])
    count = int(rng.integers(2, 6)) if num_objects is None else int(num_objects)
    if not 1 <= count <= 32:
        raise ValueError(f"num_objects must be in 1..32, got {num_objects}")
    scale = float(min(height, width))
    objects = _sample_objects(rng, count, holdout, scale)
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    background = _background(rng, kind, num_frames, height, width)
    # Re-draw the paths when an object would be hidden behind others for most of a frame; keep
    # the best try, so a crowded clip still comes out (an object may then vanish in a frame).
    best = None
    for _ in range(8):
        centres = _layout(rng, objects, num_frames, height, width)
        _, _, visible, full = _render(objects, centres, background, check_only=True)
        ratio = float((visible / np.maximum(full, 1)).min())
        if best is None or ratio > best[0]:
            best = (ratio, centres, [o["velocity"].copy() for o in objects])
        if ratio >= 0.3:
            break
    _, centres, velocities = best
    for obj, vel in zip(objects, velocities):
        obj["velocity"] = vel
    frames, labels, _, _ = _render(objects, centres, background)
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    expressions = describe_objects(objects, centres, (height, width), rng)
    info = {}
    for k, obj in enumerate(objects):
        info[k + 1] = {
            "shape": obj["shape"], "color": obj["color"], "size": obj["size"], "texture": obj["texture"],
            "turning": obj["omega"] != 0.0, "velocity": tuple(float(x) for x in obj["velocity"]),
            "radius": float(obj["radius"]), "angle0": obj["angle0"], "omega": obj["omega"],
            "expressions": expressions[k],
        }
    prefix = "synth_holdout_" if holdout else "synth_"
    return SyntheticClip(name=f"{prefix}{int(seed):06d}", frames=frames, labels=labels, objects=info,
                         seed=int(seed), holdout=holdout, background=kind, centres=centres)


def write_synthetic_dataset(root, num_videos: int, seed: int = 0, split: str = "train",
                            num_frames: int = 8, size: tuple[int, int] = (128, 128),
                            overwrite: bool = False) -> Path:
    """Write ``num_videos`` clips in the Ref-YouTube-VOS layout under ``root/split``.

    split "valid" (or "val", "holdout") uses holdout clips. Returns the dataset folder, which
    ``ytvos.read_dataset`` reads directly (or as ``read_dataset(root, split)``).
    """
    holdout = split in ("valid", "val", "holdout", "test")
    out = Path(root) / split
    out.mkdir(parents=True, exist_ok=True)
    for i in range(int(num_videos)):
        clip = generate_clip(int(seed) * 1_000_000 + i, num_frames=num_frames, size=size, holdout=holdout)
        texts = {k: o["expressions"] for k, o in clip.objects.items()}
        ytvos.write_video(out, clip.name, clip.frames, clip.labels, texts, overwrite=overwrite)
    return out
