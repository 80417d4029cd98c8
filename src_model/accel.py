"""Device helpers for the fast paths (issue 7): bf16 support, pinned transfers, on-device
preprocessing and an optional ``torch.compile`` with a clean fallback. No Qt, no napari.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=1)
def tune_cpu_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Serve PyTorch's large CPU buffers from the malloc heap instead of fresh mmaps (glibc).

    PyTorch's CPU allocator has no cache: every activation is malloc'd and freed. glibc serves
    blocks above a (dynamic, small) threshold with a fresh mmap, and returns freed heap tops to
    the system, so the next frame's tensors page-fault their memory in again - about 17,000
    faults per frame for the tiny preset's first pass, a quarter of a CPU first pass
    (BENCHMARKS.md). With blocks up to ``mmap_threshold`` from the heap and up to
    ``trim_threshold`` of free heap kept, faults drop ~25x. The process keeps up to that much
    freed memory per malloc arena (one per thread that allocates, plus fragmentation).
    Process-wide, so the application entry points call it (the ``refsam`` command, the napari
    plugin when it loads a model, the benchmarks), not the library on import. Returns whether
    both settings took effect: False off glibc (macOS, Windows, musl), with REFSAM_TUNE_MALLOC=0,
    or when glibc refuses a value (mmap_threshold above 32 MiB on 64-bit).
    """
    import os

    if not sys.platform.startswith("linux") or os.environ.get("REFSAM_TUNE_MALLOC", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):  # no mallopt (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and applied


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU runs bf16 matmuls natively (AVX512-BF16 or AMX-BF16).

    Without them, oneDNN emulates bf16 and autocast makes the encoder slower, not faster, so
    bf16 on CPU stays opt-in and is only turned on automatically where these flags exist.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:  # not Linux: trust torch's own dispatch level
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bf16 autocast is a speed-up on ``device`` (Ampere+ CUDA, or a bf16 CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` in ``dtype``; a no-op context when ``dtype`` is None."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def to_device(batch: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Move tensors / numpy arrays (also inside lists, tuples and dicts) to ``device``.

    For CUDA, host tensors are first copied into page-locked memory so the host-to-device copy
    is asynchronous and overlaps GPU work; call this on the prefetch thread so the pinning copy
    stays off the GPU-feeding thread. For other devices it is a plain ``.to``.
    """
    device = torch.device(device)
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda" and batch.device.type == "cpu":
            if not batch.is_pinned():
                batch = batch.pin_memory()
            return batch.to(device, non_blocking=non_blocking)
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device, non_blocking) for value in batch)
    return batch


def preprocess_on_device(frames, new_size: tuple[int, int], image_size: int, pixel_mean: torch.Tensor,
                         pixel_std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> normalised, zero-padded (B, 3, S, S) on ``pixel_mean``'s device.

    The resize runs on the device (bilinear with antialias, rounded to whole grey levels like a
    uint8 image), so only uint8 frames cross the bus. NOT bit-identical with SamPredictor's PIL
    resize: PIL uses fixed-point filter weights, so pixels differ by up to about one grey level
    (see tests/test_fast_paths.py); embeddings then differ slightly from the reference path.
    """
    device = pixel_mean.device
    images = to_device(frames, device).permute(0, 3, 1, 2).float()
    if tuple(images.shape[-2:]) != tuple(new_size):
        images = F.interpolate(images, new_size, mode="bilinear", align_corners=False, antialias=True)
        images = images.round_().clamp_(0, 255)
    images = (images - pixel_mean) / pixel_std
    return F.pad(images, (0, image_size - new_size[1], 0, image_size - new_size[0]))


class CompiledOrEager:
    """Calls a ``torch.compile``d function, falling back to the eager one for good on failure.

    Compilation is lazy, so failures (no C++ compiler, unsupported op, Triton missing) surface on
    the first call. When the compiled call raises and the eager call then succeeds, the failure
    was the compiler's: it is reported once as a warning and the eager function is used from then
    on. When the eager call raises too (bad input, out of memory), that error propagates and the
    compiled function is kept.
    """

    def __init__(self, eager: Callable, compiled: Callable | None) -> None:
        self.eager = eager
        self.compiled = compiled
        self.failure: str | None = None

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                result = self.eager(*args, **kwargs)  # raises if the input itself is bad
                self.fail(exc)
                return result
        return self.eager(*args, **kwargs)

    def fail(self, exc: BaseException) -> None:
        self.compiled = None
        self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"torch.compile of the image encoder failed ({self.failure}); running it eagerly",
                      RuntimeWarning, stacklevel=3)


def compile_function(fn: Callable, mode: str | None = None, dynamic: bool | None = False,
                     example: tuple | None = None) -> CompiledOrEager:
    """Wrap ``fn`` in ``torch.compile`` (mode e.g. "max-autotune-no-cudagraphs"), with fallback.

    With ``example`` args it is compiled right away by one call, so failures show here rather
    than in the first real batch.
    """
    try:
        compiled = torch.compile(fn, mode=mode, dynamic=dynamic)
    except Exception as exc:  # torch.compile itself unavailable (e.g. unsupported Python)
        wrapper = CompiledOrEager(fn, None)
        wrapper.fail(exc)
        return wrapper
    wrapper = CompiledOrEager(fn, compiled)
    if example is not None:
        with torch.no_grad():
            wrapper(*example)
    return wrapper
