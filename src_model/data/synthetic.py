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

# name -> (RGB, words). Saturated colours, far from the dull backgrounds; synonym sets are
# disjoint so a word never names two colours.
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((220, 30, 35), ("red", "crimson", "scarlet")),
    "orange": ((250, 140, 0), ("orange", "amber")),
    "yellow": ((245, 225, 30), ("yellow", "golden")),
    "green": ((40, 190, 50), ("green", "emerald")),
    "cyan": ((0, 215, 225), ("cyan", "turquoise")),
    "blue": ((35, 70, 230), ("blue", "cobalt")),
    "purple": ((150, 50, 210), ("purple", "violet")),
    "pink": ((250, 125, 200), ("pink", "rose")),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
    "ring": ("ring", "donut", "hoop"),
    "cross": ("cross", "plus sign"),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon",),
    "ellipse": ("ellipse", "oval"),
}
# Radius as a fraction of min(H, W); 1.5x steps keep the classes clearly apart.
SIZES: dict[str, float] = {"small": 0.07, "medium": 0.105, "large": 0.155}
TEXTURES = ("flat", "stripes", "dots", "noise")
BACKGROUNDS = ("noise", "gradient", "stripes", "checker")
# Never generated for training; at least one per holdout clip.
HOLDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("blue", "star"), ("green", "ring"), ("yellow", "cross")})
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
def _rotation_visible(shape: str, texture: str) -> bool:
    # A flat disc or ring looks the same at every angle: never call it "turning".
    return shape not in ("circle", "ring") or texture == "stripes"


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
        if _rotation_visible(shape, texture) and rng.random() < 0.35:
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


# ----------------------------------------------------------------------------- expressions
# A description is a dict of conditions (color, size, texture, noun, regions, motion, relation).
# It is used for an object only when the object meets it strictly and every other object fails
# even its loose version, so borderline cases ("a bit left of centre") never make it ambiguous.
SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("medium-sized", "mid-sized"),
              "large": ("large", "big")}
TEXTURE_WORDS = {"flat": ("plain",), "stripes": ("striped",), "dots": ("dotted", "spotted"),
                 "noise": ("speckled", "mottled")}
ROUND = frozenset({"circle", "ring", "ellipse"})
ALL_SHAPES = frozenset(SHAPES)
GENERIC_NOUNS = ("object", "shape", "thing")
REGION_WORDS = {"left": ("on the left", "on the left side", "at the left"),
                "right": ("on the right", "on the right side", "at the right"),
                "top": ("at the top", "near the top", "in the upper part"),
                "bottom": ("at the bottom", "near the bottom", "in the lower part")}
MOTION_WORDS = {"left": ("moving to the left", "that moves left", "going left", "heading to the left"),
                "right": ("moving to the right", "that moves right", "going right", "heading to the right"),
                "up": ("moving up", "that moves upwards", "going up", "heading up"),
                "down": ("moving down", "that moves downwards", "going down", "heading down"),
                "turning": ("that is turning", "that is spinning", "which rotates", "spinning around"),
                "still": ("that is not moving", "that stays still", "standing still")}
MOTION_ADJECTIVES = {"turning": ("spinning", "rotating", "turning"),
                     "still": ("static", "motionless", "stationary")}
RELATION_WORDS = {"above": ("above", "over"), "below": ("below", "under", "beneath"),
                  "left_of": ("left of", "to the left of"), "right_of": ("right of", "to the right of")}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _in_region(name: str, f: dict, dims: tuple[int, int], strict: bool) -> bool:
    """Strict: in that part of the frame in every frame; loose: in that half in some frame."""
    p = f["x"] / dims[1] if name in ("left", "right") else f["y"] / dims[0]
    if name in ("left", "top"):
        return bool(p.max() < 0.42) if strict else bool(p.min() < 0.5)
    return bool(p.min() > 0.58) if strict else bool(p.max() > 0.5)


def _moves(name: str, f: dict, dims: tuple[int, int], strict: bool) -> bool:
    """Motion words from the actual path: strict needs every step one way and a clear main axis."""
    if name == "turning":
        return (abs(f["omega"]) >= 0.1 and f["rot_visible"]) if strict else f["omega"] != 0
    x, y = f["x"], f["y"]
    if len(x) < 2:
        return False
    unit = min(dims) / 128
    steps = np.hypot(np.diff(x), np.diff(y))
    if name == "still":
        return bool(steps.max() < 0.05 and f["omega"] == 0) if strict else bool(steps.mean() < unit)
    along, across = (x, y) if name in ("left", "right") else (y, x)
    d = np.diff(along) * (-1 if name in ("left", "up") else 1)  # > 0 = towards the named side
    total = float(d.sum())
    if not strict:
        return total > unit
    return bool((d > 0).all() and total >= max(4.0, 0.8 * (len(x) - 1)) * unit
                and total >= 2 * abs(across[-1] - across[0]))


def _related(name: str, f: dict, g: dict, strict: bool) -> bool:
    """Is f above/below/left of/right of g? Strict: with a margin in every frame; loose: ever."""
    a, b = {"above": (f["y"], g["y"]), "below": (g["y"], f["y"]),
            "left_of": (f["x"], g["x"]), "right_of": (g["x"], f["x"])}[name]
    margin = 0.3 * (f["r"] + g["r"])
    return bool((a + margin < b).all()) if strict else bool((a < b).any())


def _holds(desc: dict, k: int, facts: list[dict], dims, strict: bool) -> bool:
    f = facts[k]
    for key in ("color", "size", "texture"):
        if key in desc and f[key] != desc[key]:
            return False
    if "noun" in desc and f["shape"] not in desc["noun"][1]:
        return False
    if not all(_in_region(r, f, dims, strict) for r in desc.get("regions", ())):
        return False
    if "motion" in desc and not _moves(desc["motion"], f, dims, strict):
        return False
    if "relation" in desc:
        rel, ref = desc["relation"]
        if ref == k or not _related(rel, f, facts[ref], strict):
            return False
    return True


def _unique(desc: dict, k: int, facts: list[dict], dims) -> bool:
    return _holds(desc, k, facts, dims, True) and not any(
        _holds(desc, j, facts, dims, False) for j in range(len(facts)) if j != k)


def _candidates(k: int, facts: list[dict], dims, rng) -> list[tuple[str, dict]]:
    """Every (category, description) that picks out object k alone."""
    f = facts[k]
    noun = (_pick(rng, SHAPES[f["shape"]]), frozenset({f["shape"]}))
    generic = (_pick(rng, GENERIC_NOUNS), ALL_SHAPES)
    c, s, t = f["color"], f["size"], f["texture"]
    out = [("attr", d) for d in (
        {"color": c, "noun": noun}, {"noun": noun}, {"color": c, "noun": generic},
        {"size": s, "color": c, "noun": noun}, {"size": s, "noun": noun}, {"size": s, "color": c, "noun": generic},
        {"texture": t, "noun": noun}, {"color": c, "texture": t, "noun": noun})]
    if f["shape"] in ROUND:
        out.append(("attr", {"color": c, "noun": (_pick(rng, ("round object", "round shape")), ROUND)}))
    bases = [{"noun": noun}, {"color": c, "noun": noun}, {"color": c, "noun": generic}]
    regions = [r for r in REGION_WORDS if _in_region(r, f, dims, True)]
    places = [(r,) for r in regions] + ([tuple(sorted(regions, key=("top", "bottom", "left", "right").index))]
                                        if len(regions) == 2 else [])
    out += [("place", {**b, "regions": p}) for p in places for b in bases]
    motions = [m for m in MOTION_WORDS if _moves(m, f, dims, True)]
    out += [("motion", {**b, "motion": m}) for m in motions for b in bases + [{"noun": generic}]]
    for j in range(len(facts)):
        for rel in RELATION_WORDS:
            if j != k and _related(rel, f, facts[j], True):
                out += [("relation", {**b, "relation": (rel, j)}) for b in bases[:2]]
    return [(cat, d) for cat, d in out if _unique(d, k, facts, dims)]


def _say(desc: dict, facts: list[dict], dims, rng) -> str:
    """Words for a description; synonyms and word order vary, the meaning does not."""
    pre = []
    if "size" in desc:
        pre.append(_pick(rng, SIZE_WORDS[desc["size"]]))
    motion = desc.get("motion")
    if motion in MOTION_ADJECTIVES and rng.random() < 0.5:
        pre.append(_pick(rng, MOTION_ADJECTIVES[motion]))
        motion = None
    if "texture" in desc:
        pre.append(_pick(rng, TEXTURE_WORDS[desc["texture"]]))
    if "color" in desc:
        pre.append(_pick(rng, COLOURS[desc["color"]][1]))
    word, shapes = desc.get("noun", (_pick(rng, GENERIC_NOUNS), ALL_SHAPES))
    if shapes == ALL_SHAPES and pre and rng.random() < 0.3:
        word = "one"
    post = []
    regions = desc.get("regions", ())
    if len(regions) == 2:
        post.append(f"in the {regions[0]} {regions[1]} corner")
    elif regions:
        post.append(_pick(rng, REGION_WORDS[regions[0]]))
    if motion:
        post.append(_pick(rng, MOTION_WORDS[motion]))
    if "relation" in desc:
        rel, ref = desc["relation"]
        post.append(f"{_pick(rng, RELATION_WORDS[rel])} {_reference(ref, facts, dims, rng)}")
    phrase = " ".join(pre + [word])
    det = "the" if rng.random() < 0.85 else ("an" if phrase[0] in "aeiou" else "a")
    return " ".join([det, phrase] + post)


def _reference(j: int, facts: list[dict], dims, rng) -> str:
    """The shortest unique attribute phrase for the reference object of a relation."""
    f = facts[j]
    noun = (_pick(rng, SHAPES[f["shape"]]), frozenset({f["shape"]}))
    short = [{"noun": noun}, {"color": f["color"], "noun": noun},
             {"color": f["color"], "noun": (_pick(rng, GENERIC_NOUNS), ALL_SHAPES)}]
    order = [short[i] for i in rng.permutation(3)] + [{"size": f["size"], "color": f["color"], "noun": noun}]
    desc = next(d for d in order if _unique(d, j, facts, dims))
    words = [_pick(rng, SIZE_WORDS[d]) for d in [desc.get("size")] if d]
    words += [_pick(rng, COLOURS[d][1]) for d in [desc.get("color")] if d]
    return " ".join(["the"] + words + [desc["noun"][0]])


def describe_objects(objects: list[dict], centres: np.ndarray, dims: tuple[int, int],
                     rng: np.random.Generator) -> list[list[str]]:
    """2-4 distinct expressions per object; the first always names colour and shape."""
    facts = [{**o, "x": centres[k, :, 0], "y": centres[k, :, 1], "r": o["radius"],
              "rot_visible": _rotation_visible(o["shape"], o["texture"])} for k, o in enumerate(objects)]
    result = []
    for k, f in enumerate(facts):
        noun = (_pick(rng, SHAPES[f["shape"]]), frozenset({f["shape"]}))
        first = {"color": f["color"], "noun": noun}
        if not _unique(first, k, facts, dims):  # (colour, shape, size) is unique by construction
            first = {"size": f["size"], **first}
        texts = [_say(first, facts, dims, rng)]
        wanted = int(rng.integers(2, 5))
        pools: dict[str, list[dict]] = {}
        for cat, d in _candidates(k, facts, dims, rng):
            pools.setdefault(cat, []).append(d)
        # Round-robin over categories in random order, so position, motion and relations all
        # show up rather than only colour-shape paraphrases.
        cats = [c for c in rng.permutation(sorted(pools))]
        tries = 0
        while len(texts) < wanted and tries < 40:
            tries += 1
            pool = pools[cats[tries % len(cats)]] if cats else [first]
            text = _say(pool[int(rng.integers(len(pool)))], facts, dims, rng)
            if text not in texts:
                texts.append(text)
        result.append(texts)
    return result


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
