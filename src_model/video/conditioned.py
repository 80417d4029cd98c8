"""Per (expression, frame) cache of the text path's conditioned image features F̄ + HDA(F̄, F_h, words).

Decoding a text object on a frame starts with HDA, which depends only on the frame's cached
features and the expression - not on τ, the mask prompt or the other objects. A re-propagation
after a correction revisits frames whose conditioned features the earlier run already computed,
so the session keeps them here and skips HDA (about a third of a tiny decode on CPU).

Entries are the exact tensors the decoder consumed (model dtype, model device), so a decode from
the cache gives bit-identical labels to a fresh one. An LRU bounded by bytes; the session passes
a ``signature`` (encoder input size and precision) at the start of every run and the cache
empties when it changes. Like the feature cache, it assumes the session's weights do not change.
"""
from __future__ import annotations

from collections import OrderedDict

import torch


class ConditionedCache:
    """LRU of (C, h, w) tensors keyed by (expression, frame), at most ``max_bytes`` of them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.hits = self.misses = 0
        self._signature = None
        self.clear()

    def clear(self) -> None:
        self._entries: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self.nbytes = 0

    def check(self, signature) -> None:
        """Empty the cache when the model's input size or precision changed since the last use."""
        if signature != self._signature:
            self.clear()
            self._signature = signature

    def get(self, key: tuple[str, int]) -> torch.Tensor | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple[str, int], value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        while self._entries and self.nbytes + size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= dropped.numel() * dropped.element_size()
        self._entries[key] = value
        self.nbytes += size

    def drop_text(self, text: str) -> None:
        """Forget every frame of one expression (its last object was removed)."""
        for key in [k for k in self._entries if k[0] == text]:
            value = self._entries.pop(key)
            self.nbytes -= value.numel() * value.element_size()

    def __len__(self) -> int:
        return len(self._entries)
