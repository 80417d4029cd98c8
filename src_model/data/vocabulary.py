"""The words and attributes of synthetic referring videos (shared by rendering and grammar)."""
from __future__ import annotations

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

def rotation_visible(shape: str, texture: str) -> bool:
    # A flat disc or ring looks the same at every angle: never call it "turning".
    return shape not in ("circle", "ring") or texture == "stripes"
