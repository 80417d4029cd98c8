"""Lazy video frame source: any video, image stack or array as random-access uint8 RGB frames.

    src = open_video("clip.mp4")          # or .avi/.mov/.mkv/.webm, .gif, .tif stack, frame folder,
                                          # (T, H, W[, C]) numpy / memmap / dask array
    src[i]                                # (H, W, 3) uint8 RGB, what the model consumes
    src.get_raw(i)                        # the frame as stored, for napari display
    for i, frame in src.iter_frames():    # decoded ahead in a background thread
        ...

Nothing here loads a whole video: frames are decoded, read or indexed one at a time. Per-format
readers live in :mod:`src_model.video.readers`. No Qt or napari imports.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path

import numpy as np

from src_model.errors import VideoReadError
from src_model.video.readers import ArrayReader, SequenceReader, reader_for_path

__all__ = ["VideoSource", "open_video", "to_uint8_rgb", "write_video"]

_LIMIT_FRAMES = 16          # frames sampled for automatic contrast limits
_LIMIT_VALUES = 1 << 21     # values sampled across them (percentiles need no more)
_IDENTITY_FRAMES = 8        # frames hashed for an array's identity


def to_uint8_rgb(frame: np.ndarray, contrast_limits=None, where: str = "frame") -> np.ndarray:
    """Convert one stored frame to uint8 RGB.

    frame: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any numeric or bool dtype.
    contrast_limits: (lo, hi) mapped linearly to 0..255 with clipping; required for dtypes other
        than uint8 and bool, applied to uint8 too when given. NaN becomes 0.
    Returns a new (H, W, 3) uint8 array (never a view of ``frame``).
    """
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] in (1, 3, 4):
        frame = frame[..., :3]  # RGBA -> RGB: alpha is not part of the image the model sees
    elif frame.ndim != 2:
        raise VideoReadError(
            f"{where}: expected (H, W) grey, or (H, W, C) with 1, 3 or 4 channels, "
            f"got shape {frame.shape}")
    if frame.dtype == bool:
        out = frame.astype(np.uint8) * np.uint8(255)
    elif frame.dtype == np.uint8 and contrast_limits is None:
        out = frame.copy()
    elif frame.dtype.kind in "uif":
        if contrast_limits is None:
            raise VideoReadError(f"{where}: {frame.dtype} frames need contrast limits to become uint8")
        lo, hi = contrast_limits
        scaled = (frame.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        np.clip(scaled, 0, 255, out=scaled)
        out = np.rint(np.nan_to_num(scaled, nan=0.0)).astype(np.uint8)
    else:
        raise VideoReadError(f"{where}: unsupported dtype {frame.dtype}, expected numeric or bool")
    if out.ndim == 2:
        return np.repeat(out[:, :, None], 3, axis=2)
    if out.shape[2] == 1:
        return np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def _check_limits(limits):
    if limits is None:
        return None
    try:
        lo, hi = (float(v) for v in limits)
    except (TypeError, ValueError):
        raise VideoReadError(f"contrast_limits must be (lo, hi) numbers, got {limits!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise VideoReadError(f"contrast_limits must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


class VideoSource:
    """Random-access, lazily read frames of one video (see the module docstring).

    Thread-safe: one lock serialises all reads, so ``get_raw`` from a display thread and
    ``iter_frames`` in a worker may run together (the decoder then seeks between them).
    Frames are (H, W, 3) uint8 from ``src[i]``, and (H, W[, C]) in the stored dtype from
    ``get_raw(i)`` (read-only; for arrays it can be a view of the caller's data).
    """

    def __init__(self, video, contrast_limits=None, prefetch: int = 4):
        self._reader = _open_reader(video)
        reader = self._reader
        if reader.num_frames == 0:
            what = f"'{reader.path}'" if reader.path else reader.name
            raise VideoReadError(f"{what} has no frames (shape {(0, *reader.frame_shape)})")
        if len(reader.frame_shape) == 3 and reader.frame_shape[2] not in (1, 3, 4):
            raise VideoReadError(
                f"{self._what()}: frames have {reader.frame_shape[2]} channels, expected 1, 3 or 4 "
                f"(shape {reader.frame_shape})")
        if min(reader.frame_shape[:2]) == 0:
            raise VideoReadError(f"{self._what()}: empty frames of shape {reader.frame_shape}")
        self._explicit_limits = _check_limits(contrast_limits)
        self._limits = self._explicit_limits
        self._limits_done = contrast_limits is not None or reader.dtype in (np.uint8, bool)
        self.prefetch = max(0, int(prefetch))
        self._lock = threading.RLock()
        self._last = None  # (index, raw frame): src[i] right after get_raw(i) reads once
        self._identity = None
        self._closed = False

    # -- description
    @property
    def name(self) -> str:
        """Short name: file stem, folder name, or "array"."""
        return self._reader.name

    @property
    def path(self) -> Path | None:
        return self._reader.path

    @property
    def fps(self) -> float | None:
        """Frames per second of a video file (None for stacks, folders and arrays)."""
        return getattr(self._reader, "fps", None)

    @property
    def num_frames(self) -> int:
        return int(self._reader.num_frames)

    @property
    def height(self) -> int:
        return int(self._reader.frame_shape[0])

    @property
    def width(self) -> int:
        return int(self._reader.frame_shape[1])

    @property
    def shape(self) -> tuple:
        """(T, H, W, 3): the shape of the converted uint8 RGB video."""
        return (self.num_frames, self.height, self.width, 3)

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype(self._reader.dtype)

    @property
    def raw_shape(self) -> tuple:
        """(T, H, W) or (T, H, W, C) of the stored frames, channels last."""
        return (self.num_frames, *(int(n) for n in self._reader.frame_shape))

    @property
    def contrast_limits(self):
        """(lo, hi) mapped to 0..255 for non-uint8 data, or None for uint8 and bool.

        Given at open, or the 0.5 / 99.5 percentiles over up to 16 evenly spaced frames,
        computed once on first use.
        """
        if not self._limits_done:
            with self._lock:
                if not self._limits_done:
                    self._limits = self._auto_limits()
                    self._limits_done = True
        return self._limits

    def _auto_limits(self):
        count = min(self.num_frames, _LIMIT_FRAMES)
        picks = np.unique(np.linspace(0, self.num_frames - 1, count).round().astype(int))
        per_frame = max(1, _LIMIT_VALUES // len(picks))
        samples = []
        for i in picks:
            raw = self._raw(int(i))
            if raw.ndim == 3:
                raw = raw[..., :3]  # alpha does not take part in the contrast
            flat = raw.reshape(-1)
            samples.append(flat[:: max(1, flat.size // per_frame)].astype(np.float64))
        values = np.concatenate(samples)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return 0.0, 1.0
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
        if hi <= lo:  # constant content: any positive width; values at lo become 0
            hi = lo + 1.0
        return lo, hi

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"VideoSource({self.name!r}, frames={self.num_frames}, size={self.width}x{self.height}, "
                f"raw={self.raw_dtype}{list(self.raw_shape[1:])})")

    def _what(self) -> str:
        return f"'{self._reader.path}'" if self._reader.path is not None else self._reader.name

    # -- frames
    def _index(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(i).__name__}")
        n = self.num_frames
        if not -n <= i < n:
            raise IndexError(f"frame {int(i)} out of range for {self._what()} with {n} frames")
        return int(i) % n

    def _raw(self, i: int) -> np.ndarray:
        with self._lock:
            if self._closed:
                raise VideoReadError(f"{self._what()} is closed; cannot read frame {i}")
            if self._last is not None and self._last[0] == i:
                return self._last[1]
            try:
                frame = self._reader.read(i)
            except VideoReadError:
                raise
            except Exception as exc:  # anything from deep inside a decoder: name file and frame
                raise VideoReadError(
                    f"{self._what()}: cannot read frame {i}: {type(exc).__name__}: {exc}") from exc
            if frame.shape != tuple(self._reader.frame_shape):
                raise VideoReadError(
                    f"{self._what()}: frame {i} has shape {frame.shape}, expected "
                    f"{tuple(self._reader.frame_shape)}")
            frame = frame.view()
            frame.flags.writeable = False  # shared by the cache and possibly the caller's array
            self._last = (i, frame)
            return frame

    def get_raw(self, i) -> np.ndarray:
        """Frame ``i`` as stored: (H, W) or (H, W, C), stored dtype, read-only."""
        return self._raw(self._index(i))

    def __getitem__(self, i) -> np.ndarray:
        """Frame ``i`` as a new (H, W, 3) uint8 RGB array; negative indices count from the end."""
        i = self._index(i)
        return to_uint8_rgb(self._raw(i), self.contrast_limits, where=f"{self._what()} frame {i}")

    def __iter__(self):
        for _, frame in self.iter_frames():
            yield frame

    def iter_frames(self, indices=None, transform=None):
        """Generator of (i, (H, W, 3) uint8 frame) over ``indices`` (default: all, in order).

        With ``prefetch > 0`` a background thread reads up to ``prefetch`` frames ahead into a
        bounded queue, so decoding overlaps the consumer. Closing the generator (``close()``,
        ``break`` + garbage collection) stops the thread. A read error is raised at the frame
        where it happened, after all earlier frames were yielded. Indices are checked now.
        transform: applied to each frame on that thread too (e.g. the encoder's resize, which
        costs ~14 ms a frame at 1024 px and would otherwise hold up the GPU's thread).
        """
        order = list(range(self.num_frames)) if indices is None else [self._index(i) for i in indices]
        read = self.__getitem__ if transform is None else (lambda i: transform(self[i]))
        if self.prefetch == 0:
            return ((i, read(i)) for i in order)
        return self._prefetched(order, read)

    def _prefetched(self, order, read):
        buffer: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item) -> bool:
            # Time out regularly so a consumer that went away never leaves this thread blocked.
            while not stop.is_set():
                try:
                    buffer.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def work():
            try:
                for i in order:
                    if stop.is_set() or not put((i, read(i))):
                        return
            except BaseException as exc:  # handed to the consumer, raised at this frame
                put(_Failure(exc))
                return
            put(done)

        worker = threading.Thread(target=work, name=f"refsam-frames-{self.name}", daemon=True)
        worker.start()
        try:
            while True:
                item = buffer.get()
                if item is done:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            worker.join(timeout=10)

    # -- identity and lifetime
    def identity(self) -> str:
        """Signature of the video content for caches.

        Files: resolved path, size and mtime_ns; folders: the same for every frame file (hashed);
        arrays: shape, dtype and a blake2b hash of up to 8 evenly sampled frames (arrays that
        differ only in unsampled frames collide). Explicit contrast limits are appended because
        they change the RGB frames.
        """
        if self._identity is None:
            path = self._reader.path
            if path is not None and path.is_dir():
                digest = hashlib.blake2b(digest_size=16)
                for f in self._reader.files:
                    st = f.stat()
                    digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                ident = f"folder:{path.resolve()}:{len(self._reader.files)}:{digest.hexdigest()}"
            elif path is not None:
                st = path.stat()
                ident = f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            else:
                digest = hashlib.blake2b(digest_size=16)
                count = min(self.num_frames, _IDENTITY_FRAMES)
                for i in np.unique(np.linspace(0, self.num_frames - 1, count).round().astype(int)):
                    digest.update(np.ascontiguousarray(self._raw(int(i))).tobytes())
                ident = f"array:{self.raw_shape}:{self.raw_dtype.str}:{digest.hexdigest()}"
            if self._explicit_limits is not None:
                ident += f":limits={self._explicit_limits[0]!r},{self._explicit_limits[1]!r}"
            turns = getattr(self._reader, "turns", 0)
            if turns:  # frames are turned upright since the reader applies display rotations
                ident += f":turns={turns}"
            if getattr(self._reader, "mirrored", False):
                ident += ":mirrored"
            self._identity = ident
        return self._identity

    def close(self) -> None:
        """Release the file handles / decoder; later reads raise VideoReadError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._last = None
                self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _open_reader(video):
    if isinstance(video, (str, os.PathLike)):
        return reader_for_path(Path(video).expanduser())
    if isinstance(video, (list, tuple)):
        return SequenceReader(video)
    if all(hasattr(video, a) for a in ("shape", "dtype", "__getitem__")):
        return ArrayReader(video)
    raise VideoReadError(
        f"cannot open a video from {type(video).__name__}: expected a path (video file, .gif, "
        f".tif stack, frame folder) or a (T, H, W[, C]) array")


def open_video(video, contrast_limits=None, prefetch: int = 4) -> VideoSource:
    """Open ``video`` lazily; an existing VideoSource is returned as is (arguments ignored).

    video: str/Path of a video file (mp4, m4v, avi, mov, mkv, webm, mpg), an animated .gif, a
        .tif/.tiff stack, a .jpg/.png image, or a folder of .jpg/.jpeg/.png/.tif frames (natural
        order); or a (T, H, W) / (T, H, W, C) numpy array, np.memmap, dask array, or a list of
        (H, W[, C]) frames.
    contrast_limits: (lo, hi) for non-uint8 data (default: robust percentiles, see VideoSource).
    prefetch: frames decoded ahead by ``iter_frames`` (0: no background thread).
    """
    if isinstance(video, VideoSource):
        return video
    return VideoSource(video, contrast_limits=contrast_limits, prefetch=prefetch)


# Re-exported: write_video lives with the PyAV code but is part of this module's API.
from src_model.video.pyav_writer import write_video  # noqa: E402
