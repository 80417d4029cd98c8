"""Where FeatureCache keeps frame features: a slab LRU in memory and raw fp16 files on disk.

Both hold, per frame, the pair (F, F_h) of (C, h, w) float16 arrays. Neither allocates per frame
once warm, and neither keeps a long video's data resident beyond its budget: the memory store
reuses the slots of evicted frames, the disk store reads and writes rows with plain file I/O
instead of a memory map.
"""
from __future__ import annotations

import errno
import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_file
from ..errors import CacheMismatchError

_FILES = ("embedding.f16", "hier.f16")


class MemoryStore:
    """LRU of frame feature pairs in preallocated fp16 slabs, at most ``max_bytes`` of them.

    Slabs of ``CHUNK`` slots are allocated as the store fills; once full, a new frame takes the
    slot of the least recently used one. ``get`` returns views into the slabs: copy them before
    the next ``put``.
    """

    CHUNK = 32

    def __init__(self, shape: tuple[int, int, int], max_bytes: int):
        self.shape = tuple(shape)
        self.frame_bytes = 2 * 2 * int(np.prod(self.shape))
        self.capacity = max(0, int(max_bytes)) // self.frame_bytes
        self.clear()

    def clear(self) -> None:
        self._slots: OrderedDict[int, int] = OrderedDict()  # frame -> slot, least recent first
        self._free: list[int] = []
        self._slabs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._allocated = 0

    def __contains__(self, i: int) -> bool:
        return i in self._slots

    @property
    def nbytes(self) -> int:
        """Bytes of the frames held (the slabs allocated may be a little more)."""
        return len(self._slots) * self.frame_bytes

    @property
    def allocated_bytes(self) -> int:
        return self._allocated * self.frame_bytes

    def _rows(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk, row = divmod(slot, self.CHUNK)
        embedding, hier = self._slabs[chunk]
        return embedding[row], hier[row]

    def get(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        slot = self._slots.get(i)
        if slot is None:
            return None
        self._slots.move_to_end(i)
        return self._rows(slot)

    def put(self, i: int, embedding: torch.Tensor, hier: torch.Tensor) -> None:
        """Store frame ``i``'s (C, h, w) pair (copied), evicting the least recently used frame if full."""
        if self.capacity == 0:
            return
        slot = self._slots.get(i)
        if slot is None:
            if not self._free and self._allocated < self.capacity:
                n = min(self.CHUNK, self.capacity - self._allocated)
                # Normal tensors even under a caller's torch.inference_mode(): an inference tensor
                # could not be written again once the caller runs outside it.
                with torch.inference_mode(False):
                    self._slabs.append(tuple(torch.empty((n, *self.shape), dtype=torch.float16) for _ in range(2)))
                self._free = list(range(self._allocated + n - 1, self._allocated - 1, -1))
                self._allocated += n
            slot = self._free.pop() if self._free else self._slots.popitem(last=False)[1]
        self._slots[i] = slot
        self._slots.move_to_end(i)
        for row, values in zip(self._rows(slot), (embedding, hier)):
            row.copy_(values)


class DiskStore:
    """The on-disk part: two raw fp16 files of (T, C, h, w) rows, a done bitmap, meta.json.

    Rows are read and written with plain file I/O rather than a memory map, so a long video's
    cache never stays mapped (resident) in this process. The done bitmap is persisted at most
    once a second and on close; a bit lost to a crash only costs re-encoding that frame.
    """

    def __init__(self, folder: Path, meta: dict, num_frames: int, shape: tuple[int, int, int]):
        self.folder = folder
        self.done_path = folder / "done.npy"
        self.row_bytes = int(np.prod(shape)) * 2
        self.shape = shape
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / "meta.json"
        size = num_frames * self.row_bytes
        if meta_path.exists():
            _check_meta(meta_path, meta)
            for name in _FILES:
                got = (folder / name).stat().st_size if (folder / name).exists() else -1
                if got != size:
                    raise CacheMismatchError(f"feature cache {folder}: {name} has {got} bytes, expected {size} "
                                             f"(truncated or written by another version); delete the folder")
            self.done = self._read_done(num_frames)
        else:
            self.done = np.zeros(num_frames, dtype=bool)
            for name in _FILES:
                with open(folder / name, "wb") as handle:
                    handle.truncate(size)  # sparse: disk is used as frames are written
            self._write_done()
            with atomic_file(meta_path, mode="w") as handle:  # last: its presence means "files sized"
                json.dump(meta, handle, indent=1)
        self.files = [open(folder / name, "r+b", buffering=0) for name in _FILES]
        self._saved = time.monotonic()
        self._dirty = False

    def _read_done(self, num_frames: int) -> np.ndarray:
        try:
            done = np.load(self.done_path)
        except (OSError, ValueError) as exc:
            raise CacheMismatchError(f"feature cache {self.folder}: done.npy is unreadable ({exc}); "
                                     "delete the folder") from None
        if done.shape != (num_frames,) or done.dtype != bool:
            raise CacheMismatchError(f"feature cache {self.folder}: done.npy has shape {done.shape}, "
                                     f"expected ({num_frames},); delete the folder")
        return done.copy()

    def _write_done(self) -> None:
        with atomic_file(self.done_path) as handle:
            np.save(handle, self.done)
        self._saved = time.monotonic()
        self._dirty = False

    def flush(self) -> None:
        """Persist done bits not yet on disk."""
        if self._dirty:
            self._write_done()

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for handle in self.files:
            row = np.empty(self.shape, np.float16)
            handle.seek(i * self.row_bytes)
            if handle.readinto(memoryview(row).cast("B")) != self.row_bytes:
                raise CacheMismatchError(f"feature cache {self.folder}: frame {i} is truncated; delete the folder")
            out.append(row)
        return tuple(out)

    def write(self, rows: list[int], embedding: np.ndarray, hier: np.ndarray) -> None:
        """Write the rows, then mark them done; an OSError (a full disk) leaves them not done."""
        for handle, values in zip(self.files, (embedding, hier)):
            for j, i in enumerate(rows):
                handle.seek(i * self.row_bytes)
                data = memoryview(np.ascontiguousarray(values[j], np.float16)).cast("B")
                while len(data):  # an unbuffered write may take only part (a nearly full disk)
                    written = handle.write(data)
                    if not written:
                        raise OSError(errno.ENOSPC, f"frame {i}: the disk took no more bytes")
                    data = data[written:]
            os.fsync(handle.fileno())  # data on disk before the done bits that vouch for it
        self.done[rows] = True
        self._dirty = True
        if time.monotonic() - self._saved > 1.0:
            self._write_done()

    def close(self) -> None:
        if self.files:
            self.flush()
            for handle in self.files:
                handle.close()
            self.files = []


def _check_meta(path: Path, want: dict) -> None:
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheMismatchError(f"feature cache {path} is corrupt ({exc}); delete {path.parent}") from None
    if not isinstance(have, dict):
        raise CacheMismatchError(f"feature cache {path} is corrupt (not a JSON object); delete {path.parent}")
    for key in want:
        if have.get(key) != want[key]:
            raise CacheMismatchError(
                f"feature cache {path.parent} was written for a different {key}: cache has "
                f"{have.get(key)!r}, this session needs {want[key]!r}; use another cache_dir or delete it")
