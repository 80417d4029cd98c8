"""npe2 sample data "Synthetic referring video": a short generated clip and its expressions.

The expressions go into the layer metadata; the RefSAM widget offers them as completions, so a
first-time user can segment without thinking up a sentence.
"""
from __future__ import annotations

from ._reader import AXIS_LABELS, EXPRESSIONS_KEY, NAME_KEY

SAMPLE_SEED = 9  # three well-separated objects; the bundled model finds "the cobalt oval" well
SAMPLE_FRAMES = 24
SAMPLE_SIZE = (192, 256)  # (H, W): small enough to segment quickly on a CPU


def make_sample_data():
    """The synthetic clip as one RGB time-series Image layer."""
    from src_model.data.synthetic import generate_clip

    clip = generate_clip(SAMPLE_SEED, num_frames=SAMPLE_FRAMES, size=SAMPLE_SIZE)
    expressions = {int(k): list(info["expressions"]) for k, info in clip.objects.items()}
    meta = {
        "name": "Synthetic referring video",
        "rgb": True,
        "axis_labels": AXIS_LABELS,
        "metadata": {EXPRESSIONS_KEY: expressions, NAME_KEY: clip.name},
    }
    return [(clip.frames, meta, "image")]
