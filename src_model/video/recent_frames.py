"""Frames a sequential decoder went past on its way to the one asked for, kept for a while.

Video codecs and GIFs decode forward only: frame i-1 after frame i means going back to a keyframe
(for a GIF, to the first frame) and decoding everything up to i-1 again. A backward pass (a
propagation from a late prompt towards the start, with frames not yet in the feature cache) would
decode O(T^2) frames. Keeping the frames decoded on the way makes each such restart serve the
next ``budget / frame size`` backward reads: O(T^2 / that) decodes, and none for short videos.
"""
from __future__ import annotations

from collections import OrderedDict

RECENT_FRAMES_BYTES = 128 << 20


class RecentFrames:
    """{frame index: decoded frame} within a byte budget; the oldest put go first."""

    def __init__(self, budget: int = RECENT_FRAMES_BYTES) -> None:
        self.budget = int(budget)
        self._frames: OrderedDict = OrderedDict()  # index -> (frame, nbytes)
        self._bytes = 0

    def put(self, index: int, frame, nbytes: int) -> None:
        if nbytes > self.budget:
            return
        self.pop(index)
        self._frames[index] = (frame, nbytes)
        self._bytes += nbytes
        while self._bytes > self.budget:
            _, (_, size) = self._frames.popitem(last=False)
            self._bytes -= size

    def pop(self, index: int):
        """The frame (then forgotten: asked for once, the caller's own cache has it), or None."""
        item = self._frames.pop(index, None)
        if item is None:
            return None
        self._bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)
