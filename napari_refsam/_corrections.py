"""Turning napari paint strokes into keyframe corrections.

napari's Labels layer emits ``events.paint`` once per committed edit (a whole brush stroke, one
fill, one ``data_setitem``), with the undo-history item as ``event.value``: a list of atoms that
are either a masked edit (``slice_key``, ``mask``, ``old_values``, ``new_value``) or the legacy
``(indices, old_values, new_values)`` tuple. ``stroke_changes`` reads from them exactly which
pixels the stroke changed, to what, and which objects it touched (those it painted and those it
painted over or erased). ``apply_strokes`` then writes those pixels onto the session's *current*
frame and locks only the touched objects: a frame a run rewrote after the stroke (the layer held
it back meanwhile) keeps the run's result for every other object. Qt-free: it runs in job threads.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


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


def stroke_changes(history_item, shape, dtype=np.uint32) -> dict | None:
    """What one napari paint history item changed on a (T, H, W) layer, read from its atoms alone:
    ``{t: (changed (H, W) bool, values (H, W) painted ids, touched ids)}``; touched: the ids (> 0)
    painted or painted over / erased. None if an atom has a form we do not know."""
    shape = tuple(int(s) for s in shape)
    out: dict = {}

    def on(t: int):
        if t not in out:
            out[t] = (np.zeros(shape[1:], bool), np.zeros(shape[1:], dtype), set())
        return out[t]

    try:
        for atom in history_item or ():
            key = getattr(atom, "slice_key", None)
            if key is not None:
                if len(key) != 3 or not all(isinstance(k, slice) for k in key):
                    return None
                ranges = [range(*k.indices(n)) for k, n in zip(key, shape)]
                region = tuple(len(r) for r in ranges)
                mask = np.ones(region, bool) if atom.mask is None else np.asarray(atom.mask).reshape(region)
                new = int(atom.new_value)
                old_ids = {int(i) for i in np.unique(np.asarray(atom.old_values))}
                ys = slice(ranges[1].start, ranges[1].stop)
                xs = slice(ranges[2].start, ranges[2].stop)
                for i, t in enumerate(ranges[0]):
                    if mask[i].any():
                        changed, values, ids = on(t)
                        changed[ys, xs] |= mask[i]
                        values[ys, xs][mask[i]] = new
                        ids.update(old_ids | {new})
                continue
            indices, old, new = atom
            t_idx, y_idx, x_idx = (np.asarray(i).ravel() for i in indices)
            new = np.broadcast_to(np.asarray(new), t_idx.shape)
            old = np.broadcast_to(np.asarray(old), t_idx.shape)
            for t in np.unique(t_idx):
                sel = t_idx == t
                changed, values, ids = on(int(t))
                changed[y_idx[sel], x_idx[sel]] = True
                values[y_idx[sel], x_idx[sel]] = new[sel]
                ids.update(int(i) for i in np.unique(np.concatenate([old[sel], new[sel]])))
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    for _, _, ids in out.values():
        ids.discard(0)
    return {t: v for t, v in out.items() if 0 <= t < shape[0]}


def frame_diff(layer_frame, session_frame) -> tuple:
    """A stroke of unknown form, as ``stroke_changes`` gives one frame: the layer against the session."""
    layer_frame = np.asarray(layer_frame)
    changed = layer_frame != np.asarray(session_frame)
    return changed, layer_frame, set(changed_objects(layer_frame, session_frame))


def apply_strokes(session, strokes, new_ids: dict | None = None) -> tuple[dict[int, list[int]], dict]:
    """Apply strokes (``stroke_changes`` dicts, in painting order) to ``session`` as corrections.

    Each stroke's pixels are written onto the session's current frame, and each object the stroke
    touched becomes a keyframe there with its pixels in that frame (empty: absent there). A label
    no object has becomes a new object (``add_object(mask=)``); later strokes with the same label
    extend it. Returns ({frame changed: ids of the objects locked there}, {painted label: new
    object id}), frames in painting order. Call it inside ``session.edit_group`` to make it one
    undo step.
    """
    new_ids = {} if new_ids is None else new_ids
    frames: dict[int, list[int]] = {}
    for stroke in strokes:
        for t, (changed, values, ids) in sorted(stroke.items()):
            frame = np.array(session.labels[t], dtype=np.int64)  # room for any painted label
            painted = values[changed].astype(np.int64)
            for label, obj in new_ids.items():
                painted[values[changed] == label] = obj
            frame[changed] = painted
            locked = frames.setdefault(t, [])
            for label in sorted(ids):
                obj = new_ids.get(label, label)
                mask = frame == obj
                if obj in session.keyframes:
                    session.set_mask(obj, t, mask)
                elif mask.any():
                    obj = new_ids[label] = session.add_object(frame=t, mask=mask)
                else:
                    continue
                if obj not in locked:
                    locked.append(obj)
    return frames, new_ids


def changed_objects(new_frame: np.ndarray, old_frame: np.ndarray) -> list[int]:
    """Ids (> 0) whose pixels differ between two (H, W) label frames: lost or gained pixels."""
    new_frame = np.asarray(new_frame)
    old_frame = np.asarray(old_frame)
    diff = new_frame != old_frame
    if not diff.any():
        return []
    ids = np.union1d(np.unique(new_frame[diff]), np.unique(old_frame[diff]))
    return [int(i) for i in ids if i != 0]


def take_all(items: list) -> list:
    """Empty ``items`` in place and return what it held: the GUI thread may append meanwhile, and
    whoever takes a stroke (the run's token or the widget) is the only one to apply it."""
    taken = []
    while items:
        taken.append(items.pop(0))
    return taken


def strokes_applier(strokes: list):
    """A ``CancelToken.before_save`` hook: applies the strokes in ``strokes`` (a list the widget
    keeps appending to while the run goes on) as one undo step; True if there were any."""
    def apply(session) -> bool:
        taken = take_all(strokes)
        parsed = [s for s in taken if isinstance(s, dict) and s]
        if len(parsed) < len(taken):
            log.warning("RefSAM: %d paint stroke(s) without readable pixels were not applied", len(taken) - len(parsed))
        if not parsed:
            return False
        apply_as_one_step(session, parsed)
        return True
    return apply


def apply_as_one_step(session, strokes: list[dict]):
    """``apply_strokes`` as one undo step ("correction"); returns what it returns."""
    with session.edit_group("correction"):
        return apply_strokes(session, strokes)
