"""Cache of the text-independent features of every frame: the image encoder runs once per frame.

    cache = FeatureCache(model, source, cache_dir="~/.cache/refsam")   # disk part optional
    for i, feats in cache.iter_features(range(len(source))):           # encodes what is missing
        model.decode(feats, text=...)                                   # feats: FrameFeatures, batch 1

Per frame it holds F (the SAM neck output) and F_h (the HDA hierarchy features), both (C, h, w),
stored as float16 (4 MiB per frame for ViT-B, 0.5 MiB for the tiny preset). Decoding always reads
the fp16 copy, so labels do not depend on whether a frame came from memory, disk or a fresh encode.

Memory: an LRU bounded by bytes (slabs reused on eviction; feature_stores.MemoryStore). Disk:
``cache_dir/<signature>/`` holds two raw fp16 files with one row per frame (``embedding.f16``,
``hier.f16``: (T, C, h, w), memmap-compatible), a ``done.npy`` bitmap and ``meta.json`` (format
version, weights signature, video identity, preprocessing, shapes). Rows are fsynced before their
done bit is written, so an interrupted run leaves a valid partial cache that later runs resume.
Different models or videos get different subfolders; a folder whose meta.json does not match (or
``cache_dir`` pointing straight at such a folder) is refused with CacheMismatchError naming the key.
"""
from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..errors import RefSAMError, VideoReadError
from ..modeling.refsam import FrameFeatures
from .feature_stores import DiskStore, MemoryStore
from .source import open_video

FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 2 << 30
_FILES = ("embedding.f16", "hier.f16")


def default_batch_size(device: torch.device) -> int:
    """Frames per encoder call: batching pays on a GPU; on a CPU it only costs latency."""
    return 8 if device.type == "cuda" else 2


def device_error(exc: BaseException, what: str) -> RefSAMError:
    """Turn a torch out-of-memory / device failure into a one-line RefSAMError."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text.lower():
        return RefSAMError(f"out of memory while {what}; use a smaller batch size, fewer objects, "
                           f"or another device (--device cpu): {text}")
    return RefSAMError(f"{what} failed on the model device: {text}")


class FeatureCache:
    """Features of one video for one model (see the module docstring).

    model: RefSAM; video: anything ``open_video`` accepts; cache_dir: root folder of the disk cache
    (None: memory only); max_bytes: memory budget of the LRU (0: no memory cache); batch_size:
    frames per encoder call (default 8 on CUDA, 2 otherwise).
    ``frames_encoded`` counts frames that went through the image encoder (tests use it to prove
    that each frame is encoded once).
    """

    def __init__(self, model, video, cache_dir=None, max_bytes: int = DEFAULT_MAX_BYTES,
                 batch_size: int | None = None):
        self.model = model
        self.source = open_video(video)
        self.num_frames = len(self.source)
        self.batch_size = max(1, int(batch_size or default_batch_size(model.device)))
        self.max_bytes = max(0, int(max_bytes))
        cfg = model.config.sam
        side = cfg.embedding_size
        self.shape = (cfg.prompt_embed_dim, side, side)
        height, width = self.source.height, self.source.width
        self.input_size = model.resized_size(height, width)
        self.original_size = (height, width)
        self.frames_encoded = 0
        self.encoder_calls = 0
        self._memory = MemoryStore(self.shape, self.max_bytes)
        self.frame_bytes = self._memory.frame_bytes
        self._lock = threading.RLock()
        self.meta = {
            "format_version": FORMAT_VERSION,
            "weights_id": str(model.weights_id),
            "video": self.source.identity(),
            "preprocessing": {"image_size": cfg.image_size, "input_size": list(self.input_size),
                              "original_size": list(self.original_size),
                              "pixel_mean": list(cfg.pixel_mean), "pixel_std": list(cfg.pixel_std)},
            "num_frames": self.num_frames,
            "shape": list(self.shape),
            "dtype": "float16",
        }
        self.folder = None
        self._disk = None
        if cache_dir is not None:
            self.folder = self._folder(Path(cache_dir).expanduser())
            self._disk = DiskStore(self.folder, self.meta, self.num_frames, self.shape)

    def _folder(self, root: Path) -> Path:
        # A folder that already is one cache (has meta.json) is used as is and checked; a root gets
        # one subfolder per signature so different models and videos never meet.
        if (root / "meta.json").exists():
            return root
        key = hashlib.blake2b(json.dumps(self.meta, sort_keys=True).encode(), digest_size=8).hexdigest()
        return root / f"{self.source.name[:40]}-{key}"

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return self.num_frames

    def has(self, i: int) -> bool:
        """True when frame ``i`` needs no encoding (in memory or done on disk)."""
        return i in self._memory or (self._disk is not None and bool(self._disk.done[i]))

    def missing(self, indices: Iterable[int]) -> list[int]:
        return [i for i in indices if not self.has(i)]

    @property
    def memory_bytes(self) -> int:
        """Bytes of features held in memory (bounded by ``max_bytes``)."""
        return self._memory.nbytes

    # ----------------------------------------------------------------- reading
    def get(self, i: int) -> FrameFeatures:
        """Features of frame ``i`` (encoded now if missing): batch 1, fp32, on the model device."""
        i = self._check(i)
        with self._lock:
            pair = self._memory.get(i)
            if pair is None and self._disk is not None and self._disk.done[i]:
                pair = tuple(torch.from_numpy(a) for a in self._disk.read(i))
                self._memory.put(i, *pair)
            elif pair is None:
                one = self.iter_features([i])
                try:
                    return next(one)[1]
                finally:
                    one.close()  # stops the source's read-ahead thread now, not at garbage collection
            return self._features(pair)  # copies out of the store while the lock is held

    def iter_features(self, order: Iterable[int]) -> Iterator[tuple[int, FrameFeatures]]:
        """Generator of (i, FrameFeatures) in ``order``, encoding missing frames in batches.

        Missing frames are read ahead by the source's background thread and encoded
        ``batch_size`` at a time, in the order they will be needed, so decoding frame t only
        waits for the encoder when t itself is new.
        """
        order = [self._check(i) for i in order]
        todo = list(dict.fromkeys(self.missing(order)))
        # The reader's thread also resizes each frame for the encoder (bit-identical to preprocess).
        frames = self.source.iter_frames(todo, transform=self.model.resize_for_encoder) if todo else iter(())
        pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        unreadable = None  # the read error of frame todo[0], raised when that frame is needed
        try:
            for i in order:
                if i in pending:
                    pair = pending.pop(i)
                elif todo and i == todo[0]:
                    if unreadable is not None:
                        raise unreadable
                    pending, unreadable = self._encode_batch(frames, todo)
                    pair = pending.pop(i)
                else:
                    yield i, self.get(i)
                    continue
                yield i, self._features(pair)
        finally:
            if hasattr(frames, "close"):
                frames.close()
            if self._disk is not None:
                with self._lock:
                    self._disk.flush()

    def ensure(self, indices: Iterable[int] | None = None) -> int:
        """Encode the frames among ``indices`` (default all) that are not cached; returns how many."""
        indices = range(self.num_frames) if indices is None else indices
        todo = self.missing(dict.fromkeys(self._check(i) for i in indices))
        for _ in self.iter_features(todo):
            pass
        return len(todo)

    # ----------------------------------------------------------------- encoding
    def _encode_batch(self, frames: Iterator, todo: list[int]) -> tuple[dict, VideoReadError | None]:
        """Pull the next ``batch_size`` frames of ``todo`` from ``frames``, encode and store them.

        Returns ({i: (embedding, hier)}, None), or the frames read before an unreadable one and
        its error: those frames are still encoded and used, and the error comes when its turn does.
        """
        rows, images = [], []
        while todo and len(rows) < self.batch_size:
            try:
                i, frame = next(frames)
            except VideoReadError as exc:
                if not rows:
                    raise
                return self._encode_rows(rows, images), exc
            if i != todo[0]:
                raise RuntimeError(f"frame order broken: got {i}, expected {todo[0]}")
            todo.pop(0)
            rows.append(i)
            images.append(frame)
        return self._encode_rows(rows, images), None

    def _encode_rows(self, rows: list[int], images: list[np.ndarray]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        try:
            # bf16 is the model's own setting (load_refsam turns it on for CUDA): the encoder runs
            # under autocast and hands back fp32, so the HDA projection stays in fp32.
            with torch.inference_mode():
                feats = self.model.encode_frames(np.stack(images))
                embedding = feats.embedding.to(torch.float16).cpu()
                hier = feats.hier.to(torch.float16).cpu()
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise device_error(exc, f"encoding frames {rows[0]}-{rows[-1]} of {self.source.name} "
                                    f"(batch of {len(rows)})") from exc
        self.encoder_calls += 1
        self.frames_encoded += len(rows)
        with self._lock:
            if self._disk is not None:
                try:
                    self._disk.write(rows, embedding.numpy(), hier.numpy())
                except OSError as exc:
                    self._drop_disk(exc)
            for j, i in enumerate(rows):
                self._memory.put(i, embedding[j], hier[j])
        # The batch's own tensors, not store slots: a small store may reuse a slot before it is read.
        return {i: (embedding[j], hier[j]) for j, i in enumerate(rows)}

    # ----------------------------------------------------------------- helpers
    def _drop_disk(self, exc: OSError) -> None:
        """The disk store failed to write (say, the disk is full): the run goes on with the memory
        cache alone. Rows written before stay valid; the failed ones were never marked done."""
        disk, self._disk = self._disk, None
        warnings.warn(f"feature cache {self.folder}: writing failed ({exc.strerror or exc}); going on without "
                      "the disk cache for this video", RuntimeWarning, stacklevel=3)
        try:
            disk.close()
        except OSError:
            pass  # done.npy keeps its last saved state, which vouches only for rows written before

    def _features(self, pair) -> FrameFeatures:
        device = self.model.device
        # .float() makes a new tensor, so the result never aliases a store slot.
        embedding, hier = (t.to(device).float().unsqueeze(0) for t in pair)
        return FrameFeatures(embedding, hier, self.input_size, self.original_size)

    def _check(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(i).__name__}")
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {int(i)} out of range for a video of {self.num_frames} frames")
        return int(i)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def close(self) -> None:
        """Drop the memory cache and close the disk files (the video source stays open)."""
        with self._lock:
            self.clear_memory()
            if self._disk is not None:
                self._disk.close()
                self._disk = None
