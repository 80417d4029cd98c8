"""J&F of a synthetic-data evaluation broken down by what the expressions say (issue 6).

    python benchmarks/eval_breakdown.py metrics.json [more.json ...]

Reads the JSON that ``refsam eval --output`` writes and groups its per-expression scores by the
attributes each expression names, using the generator's own vocabulary (src_model/data): colour,
shape, size, texture, absolute position, motion, a relation to another object, and expressions
naming no colour and no shape ("the large thing"). An expression counts in every group it
belongs to. Prints one markdown table with a column per file.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src_model.data.expressions import (MOTION_ADJECTIVES, MOTION_WORDS, REGION_WORDS,  # noqa: E402
                                        RELATION_WORDS, SIZE_WORDS, TEXTURE_WORDS)
from src_model.data.vocabulary import COLOURS, SHAPES  # noqa: E402


def _words(groups) -> list[str]:
    return sorted({w for words in groups for w in words}, key=len, reverse=True)


KINDS = {
    "colour": _words(words for _, words in COLOURS.values()),
    "shape": _words(SHAPES.values()),
    "size": _words(SIZE_WORDS.values()),
    "texture": _words(TEXTURE_WORDS.values()),
    "position": _words(REGION_WORDS.values()) + ["corner"],
    "motion": _words(MOTION_WORDS.values()) + _words(MOTION_ADJECTIVES.values()) + ["moves", "moving"],
    "relation": _words(RELATION_WORDS.values()),
}


def kinds_of(text: str) -> set[str]:
    text = text.lower()
    found = {kind for kind, words in KINDS.items()
             if any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)}
    if "relation" in found:  # "left of the red ball" names a second object's colour/shape too
        found -= {"position"}
    if not found & {"colour", "shape"}:
        found.add("no colour or shape")
    return found


def breakdown(metrics: dict) -> dict[str, tuple[int, float]]:
    rows = metrics["per_expression"]
    groups: dict[str, list[float]] = {"all": [r["J&F"] for r in rows]}
    for r in rows:
        for kind in kinds_of(r["text"]):
            groups.setdefault(kind, []).append(r["J&F"])
    return {k: (len(v), mean(v)) for k, v in groups.items()}


def main(paths: list[str]) -> None:
    tables = [breakdown(json.loads(Path(p).read_text())) for p in paths]
    order = ["all", *KINDS, "no colour or shape"]
    print("| expressions naming | n | " + " | ".join(Path(p).name for p in paths) + " |")
    print("|---|---:|" + "---:|" * len(paths))
    for kind in order:
        if any(kind in t for t in tables):
            n = next(t[kind][0] for t in tables if kind in t)
            cells = [f"{t[kind][1]:.3f}" if kind in t else "–" for t in tables]
            print(f"| {kind} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", help="JSON files written by refsam eval --output")
    main(parser.parse_args().metrics)
