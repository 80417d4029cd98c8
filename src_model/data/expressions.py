"""Referring-expression grammar for synthetic clips: unique, varied descriptions of each object."""
from __future__ import annotations

import numpy as np

from .vocabulary import COLOURS, SHAPES, rotation_visible

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
              "rot_visible": rotation_visible(o["shape"], o["texture"])} for k, o in enumerate(objects)]
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
