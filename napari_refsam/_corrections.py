"""Turning napari paint strokes into keyframe corrections.

napari's Labels layer emits ``events.paint`` once per committed edit (a whole brush stroke, one
fill, one ``data_setitem``), with the undo-history item as ``event.value``: a list of atoms that
are either a masked edit (``slice_key``, ``mask``, ``old_values``, ``new_value``) or the legacy
``(indices, old_values, new_values)`` tuple. We only need *which frames* the edit touched; what
changed on a frame is found by comparing the layer's frame with the session's labels, which also
covers edits made in several strokes before the widget handled them.
"""
from __future__ import annotations

import numpy as np


def painted_frames(history_item, num_frames: int) -> set[int]:
    """Frame indices (axis 0) touched by one napari paint history item (empty if unknown)."""
    frames: set[int] = set()
    for atom in history_item or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:  # masked edit: a bounding box of slices
            first = key[0]
            if isinstance(first, slice):
                start, stop, _ = first.indices(num_frames)
                frames.update(range(start, stop))
            else:
                frames.add(int(first))
            continue
        try:
            indices = atom[0]
            frames.update(int(t) for t in np.unique(np.asarray(indices[0])))
        except (TypeError, IndexError, ValueError):
            continue  # an atom of a form we do not know: the caller falls back to the current frame
    return {t for t in frames if 0 <= t < num_frames}


def changed_objects(new_frame: np.ndarray, old_frame: np.ndarray) -> list[int]:
    """Ids (> 0) whose pixels differ between two (H, W) label frames: lost or gained pixels."""
    new_frame = np.asarray(new_frame)
    old_frame = np.asarray(old_frame)
    diff = new_frame != old_frame
    if not diff.any():
        return []
    ids = np.union1d(np.unique(new_frame[diff]), np.unique(old_frame[diff]))
    return [int(i) for i in ids if i != 0]
