"""The DAVIS / Ref-YouTube-VOS annotation palette.

DAVIS and YouTube-VOS store object ids as indices of a palette PNG whose colours come from the
PASCAL VOC colour map: the bits of the index are spread over the high bits of R, G and B
(bit 0 -> R, bit 1 -> G, bit 2 -> B, the next three bits one place lower, and so on). So id 1 is
dark red (128, 0, 0), id 2 dark green (0, 128, 0), id 9 (192, 0, 0), id 255 (224, 224, 192).
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def davis_palette() -> bytes:
    """768 bytes: R, G, B for palette indices 0..255 (what ``PIL.Image.putpalette`` takes)."""
    out = bytearray()
    for index in range(256):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):  # the lowest index bits go to the highest colour bits
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        out.extend(rgb)
    return bytes(out)
