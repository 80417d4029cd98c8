"""Per (expression, frame) cache of the text path's decoder input: the conditioned image rows
F̄ + HDA(F̄, F_h, words) and the decoder's first-layer projections of them.

Decoding a text object on a frame starts with HDA, which depends only on the frame's cached
features and the expression - not on τ, the mask prompt or the other objects - and so do the
three image projections of the decoder's first layer (the dense prompt's share is added per
decode, see ``decoder.add_dense_prompt``). A re-propagation after a correction revisits frames
whose entries the earlier run already computed, so the session keeps them here and skips HDA
(about a third of a tiny decode on CPU) and those projections.

Entries are computed once, the same way whether or not they are then kept (model dtype, model
device), and every decode starts from them: a decode from the cache gives bit-identical labels to
one that had to recompute its entry (a cache of size 0 included). Entries are 2.5x the conditioned
rows alone (1.25 MiB per (expression, frame) on ``tiny``). An LRU bounded by bytes; the session passes
a ``signature`` (encoder input size and precision) at the start of every run and the cache
empties when it changes. Like the feature cache, it assumes the session's weights do not change.
"""
from __future__ import annotations

from collections import OrderedDict

import torch


def _nbytes(value: tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in value)


class ConditionedCache:
    """LRU of tuples of tensors keyed by (expression, frame), at most ``max_bytes`` of them.

    An entry's first tensor is what is dear to recompute (the conditioned rows: HDA); the rest
    (the first-layer projections) is cheaper per byte. When a new entry needs room, the least
    recently used entries first lose their rest, and only then are whole entries evicted: a
    sweep over more frames than fit whole still finds every frame's rows, as before the
    projections were kept, and ``get`` may return an entry of the rows alone.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.hits = self.misses = 0
        self._signature = None
        self.clear()

    def clear(self) -> None:
        self._entries: OrderedDict[tuple[str, int], tuple[torch.Tensor, ...]] = OrderedDict()
        self.nbytes = 0

    def check(self, signature) -> None:
        """Empty the cache when the model's input size or precision changed since the last use."""
        if signature != self._signature:
            self.clear()
            self._signature = signature

    def get(self, key: tuple[str, int]) -> tuple[torch.Tensor, ...] | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple[str, int], value: tuple[torch.Tensor, ...]) -> None:
        if _nbytes(value) > self.max_bytes:
            value = value[:1]  # the rows alone may still fit
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= _nbytes(old)
        self._make_room(size)
        self._entries[key] = value
        self.nbytes += size

    def _make_room(self, size: int) -> None:
        if self.nbytes + size <= self.max_bytes:
            return
        for key, value in self._entries.items():  # least recently used first
            if len(value) > 1:
                self._entries[key] = value[:1]
                self.nbytes -= _nbytes(value[1:])
                if self.nbytes + size <= self.max_bytes:
                    return
        while self._entries and self.nbytes + size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= _nbytes(dropped)

    def drop_text(self, text: str) -> None:
        """Forget every frame of one expression (its last object was removed)."""
        for key in [k for k in self._entries if k[0] == text]:
            value = self._entries.pop(key)
            self.nbytes -= _nbytes(value)

    def __len__(self) -> int:
        return len(self._entries)
