"""Undo records of a session: what an edit (propagation, correction, object added/removed) changed.

An ``Edit`` is opened before the change and filled as it happens: the old content of each label
frame the first time it changes (zlib-compressed: label frames are mostly runs of a few ids),
the old per-frame chain state rows, and a snapshot of the object table and keyframe dicts
(cheap: dict copies of references; keyframe masks are never modified in place). Reverting writes
all of it back, so ``undo()`` restores labels bit for bit.
"""
from __future__ import annotations

import zlib

import numpy as np


class Edit:
    """The changes of one user-level operation, enough to revert it."""

    def __init__(self, name: str, session) -> None:
        self.name = name
        self.frames: dict[int, tuple[bytes, str, str]] = {}  # blob, stored dtype, frame dtype
        self.states: dict[tuple[int, int], tuple] = {}
        self.table = dict(session._objects)
        self.keyframes = {i: dict(o.keyframes) for i, o in self.table.items()}
        self.next_id = session._next_id

    def save_frame(self, t: int, old: np.ndarray) -> None:
        """Remember frame ``t`` as it was before this edit first changed it."""
        if t not in self.frames:
            # Most sessions have fewer than 256 objects: compressing the frame as uint8 halves
            # zlib's input (the largest cost of committing a re-propagated frame after the decode).
            narrow = old.astype(np.uint8) if old.dtype.itemsize > 1 and old.max(initial=0) < 256 else old
            self.frames[t] = (zlib.compress(np.ascontiguousarray(narrow).tobytes(), 1), narrow.dtype.str, old.dtype.str)

    def save_state(self, obj, t: int) -> None:
        key = (obj.id, t)
        if key not in self.states:
            self.states[key] = (obj, obj.track[t].copy(), bool(obj.known[t]), bool(obj.cond[t]))

    def is_empty(self, session) -> bool:
        def same(a: dict, b: dict) -> bool:  # by identity: masks are replaced, never edited
            return a.keys() == b.keys() and all(a[k] is b[k] for k in a)

        return (not self.frames and not self.states and self.table.keys() == session._objects.keys()
                and all(same(self.keyframes[i], o.keyframes) for i, o in self.table.items()))

    @property
    def nbytes(self) -> int:
        return sum(len(entry[0]) for entry in self.frames.values())

    def revert(self, session) -> list[int]:
        """Write everything back; returns the label frames restored."""
        height, width = session.frame_shape
        for t, (blob, stored, dtype) in self.frames.items():
            frame = np.frombuffer(zlib.decompress(blob), dtype=np.dtype(stored)).reshape(height, width)
            frame = frame.astype(np.dtype(dtype), copy=False)
            session._store.write(t, frame)
        for (_, t), (obj, track, known, cond) in self.states.items():
            obj.track[t], obj.known[t], obj.cond[t] = track, known, cond
        session._objects = dict(self.table)
        for i, obj in self.table.items():
            obj.keyframes = dict(self.keyframes[i])
        session._next_id = self.next_id
        return sorted(self.frames)
