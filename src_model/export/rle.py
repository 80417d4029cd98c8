"""COCO run-length encoding of binary masks, with or without pycocotools.

A COCO RLE is ``{"size": [H, W], "counts": ...}`` over the mask read column by column (Fortran
order), runs alternating background / foreground and starting with background (a mask whose
first pixel is set starts with a zero-length run).
- uncompressed: ``counts`` is the list of run lengths;
- compressed: ``counts`` is an ASCII string. Each run (from the fourth on, as the difference to the
  run two before, which is small for smooth shapes) is written as a signed number in 5-bit groups,
  least significant first, each group + 48 as one character with 0x20 meaning "more groups follow".

pycocotools (C) encodes when installed because it is faster; the numpy / pure-Python path here
produces the same strings and is used otherwise, so exported files do not depend on it. Decoding
always goes through the checked path here (see ``decode_rle``).
"""
from __future__ import annotations

import numpy as np

try:  # optional, faster
    from pycocotools import mask as _mask_utils
except ImportError:  # pragma: no cover - depends on the environment
    _mask_utils = None

__all__ = ["encode_rle", "decode_rle", "counts_to_string", "string_to_counts", "rle_area", "mask_bbox"]


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a bool (H, W) mask in column-major order, starting with a background run."""
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(edges).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs


def counts_to_string(counts: list[int]) -> str:
    """Compress run lengths into the COCO counts string."""
    chars = []
    for i, run in enumerate(counts):
        value = int(run) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative numbers end at -1
            more = value != -1 if group & 0x10 else value != 0
            chars.append(chr(group + 48 + (0x20 if more else 0)))
    return "".join(chars)


def string_to_counts(text: str) -> list[int]:
    """Expand a COCO counts string into run lengths (ValueError if it is malformed)."""
    counts: list[int] = []
    pos, end = 0, len(text)
    while pos < end:
        value, shift, more = 0, 0, True
        while more:
            if pos >= end:
                raise ValueError("compressed RLE string ends in the middle of a number")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"invalid character {text[pos]!r} in compressed RLE string")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode_rle(mask, compressed: bool = True) -> dict:
    """COCO RLE of a bool (H, W) mask: ``{"size": [H, W], "counts": str | list[int]}``."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    if compressed and _mask_utils is not None:
        rle = _mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}
    runs = _runs(mask)
    return {"size": [int(height), int(width)], "counts": counts_to_string(runs) if compressed else runs}


def decode_rle(rle: dict) -> np.ndarray:
    """Bool (H, W) mask of a compressed or uncompressed COCO RLE (ValueError if malformed)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError("an RLE needs 'size': [height, width] and 'counts'") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        # Parsed here even when pycocotools is installed: its decoder trusts the runs to fit the
        # size and writes past the buffer on a malformed foreign file; this checks them.
        counts = string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("RLE counts must be non-negative run lengths")
    if int(counts.sum()) != height * width:
        raise ValueError(f"RLE runs cover {int(counts.sum())} pixels, but size {height}x{width} has {height * width}")
    flat = np.repeat(np.arange(counts.size) % 2 == 1, counts)
    return flat.reshape((width, height)).T


def rle_area(mask: np.ndarray) -> int:
    """Number of foreground pixels."""
    return int(np.count_nonzero(mask))


def mask_bbox(mask: np.ndarray) -> list[float] | None:
    """COCO box ``[x, y, width, height]`` of the foreground, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
