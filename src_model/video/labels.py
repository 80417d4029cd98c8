"""The (T, H, W) label volume of a session: in memory, or a ``.npy`` file on disk for long videos.

The session reads and writes one frame at a time through ``read``/``write``. On disk these are
plain file reads and writes, not a memory map, so propagating a long video never keeps the pages
of frames it has passed resident in this process (its RSS stays flat). ``array`` is what viewers
get: the ndarray, or an ``np.memmap`` of the same file (coherent with the writes: one page cache).
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np

MEMMAP_BYTES = 2 << 30  # label volumes larger than this go to disk even without a labels_path


def label_dtype(max_id: int) -> np.dtype:
    """uint16 holds ids up to 65535; more objects need uint32."""
    return np.dtype(np.uint16 if max_id <= 0xFFFF else np.uint32)


class LabelStore:
    """shape (T, H, W); dtype uint16/uint32; path: a new .npy file (None: memory, or a temporary
    file when the volume exceeds ``memmap_bytes``; temp_dir says where)."""

    def __init__(self, shape, dtype=np.uint16, path=None, memmap_bytes: int = MEMMAP_BYTES,
                 temp_dir=None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._lock = threading.Lock()
        self._view = None
        self._file = None
        self._temporary = False
        self.path = None
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if path is None and nbytes > memmap_bytes:
            fd, tmp = tempfile.mkstemp(prefix="refsam-labels-", suffix=".npy", dir=temp_dir)
            os.close(fd)
            os.unlink(tmp)  # open_memmap creates it; mkstemp only reserved a unique name
            path, self._temporary = tmp, True
        if path is None:
            self._memory = np.zeros(self.shape, self.dtype)
            return
        self._memory = None
        self.path = Path(path).expanduser()
        if self.path.exists() and not self._temporary:
            raise FileExistsError(f"labels_path {self.path} already exists; give a new file name "
                                  "(sessions are restored with VideoSession.load)")
        if self.path.suffix != ".npy":
            raise ValueError(f"labels_path must end in .npy, got {self.path.name!r}")
        self._open_file(create=True)
        self._drop_temporary_name()

    def _drop_temporary_name(self) -> None:
        """A temporary file loses its name as soon as it is open (POSIX keeps an open, unlinked file
        until it is closed): a killed process leaves no multi-GB file behind. (Windows cannot
        unlink an open file; there it is deleted by ``close``.)"""
        if self._temporary and os.name == "posix":
            self.path.unlink(missing_ok=True)

    def _open_file(self, create: bool) -> None:
        if create:
            # Writes the .npy header and sizes the file (sparse: zeros cost no disk until written).
            np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)._mmap.close()
        with open(self.path, "rb") as handle:
            np.lib.format.read_magic(handle)
            np.lib.format.read_array_header_1_0(handle)
            self._offset = handle.tell()
        self._file = open(self.path, "r+b", buffering=0)
        self._view = None

    # ----------------------------------------------------------------- frames
    @property
    def frame_bytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.dtype.itemsize

    def read(self, t: int) -> np.ndarray:
        """A copy of frame ``t``: (H, W) of ``dtype``."""
        if self._memory is not None:
            return self._memory[t].copy()
        out = np.empty(self.shape[1:], self.dtype)
        with self._lock:
            self._file.seek(self._offset + t * self.frame_bytes)
            self._file.readinto(memoryview(out).cast("B"))
        return out

    def write(self, t: int, frame: np.ndarray) -> None:
        """Replace frame ``t`` with ``frame`` (H, W) in one piece."""
        frame = np.ascontiguousarray(frame, dtype=self.dtype)
        if self._memory is not None:
            self._memory[t] = frame
            return
        with self._lock:
            self._file.seek(self._offset + t * self.frame_bytes)
            self._file.write(memoryview(frame).cast("B"))

    @property
    def array(self) -> np.ndarray:
        """The whole volume: the in-memory array, or a read-write np.memmap of the file."""
        if self._memory is not None:
            return self._memory
        if self._view is None:  # mapped from the open file: a temporary one has no name any more
            self._view = np.memmap(self._file, dtype=self.dtype, mode="r+", offset=self._offset,
                                   shape=self.shape)
        return self._view

    @property
    def on_disk(self) -> bool:
        return self._memory is None

    def promote(self, dtype) -> None:
        """Widen the dtype (uint16 -> uint32 past 65535 objects), frame by frame."""
        dtype = np.dtype(dtype)
        if dtype.itemsize <= self.dtype.itemsize:
            return
        if self._memory is not None:
            self._memory = self._memory.astype(dtype)
            self.dtype = dtype
            return
        # On disk: write a widened copy next to the file, then rename it over the old one.
        old = np.empty(self.shape[1:], self.dtype)
        old_file, old_offset, final = self._file, self._offset, self.path
        self.path = final.with_name(f".{final.stem}.{dtype.name}.tmp.npy")
        self.dtype = dtype
        self._open_file(create=True)
        for t in range(self.shape[0]):
            old_file.seek(old_offset + t * old.nbytes)
            old_file.readinto(memoryview(old).cast("B"))
            self.write(t, old)
        old_file.close()
        self._file.close()
        os.replace(self.path, final)
        self.path = final
        self._open_file(create=False)
        self._drop_temporary_name()

    def close(self) -> None:
        """Close the file; a temporary one is deleted."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._view = None
        if self._temporary and self.path is not None:
            self.path.unlink(missing_ok=True)
