"""Writing videos with PyAV (tests, benchmarks, the sample video and overlay exports).

``write_video`` is re-exported by :mod:`src_model.video.source`. No Qt or napari imports.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from src_model.errors import VideoReadError

_ENCODERS = {".webm": ("libvpx-vp9", "libvpx"), ".avi": ("mpeg4", "libx264")}
_DEFAULT_ENCODERS = ("libx264", "h264", "mpeg4")


def _pick_encoder(suffix: str) -> str:
    import av

    candidates = _ENCODERS.get(suffix, _DEFAULT_ENCODERS)
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise VideoReadError(f"no encoder for {suffix} in this PyAV build (tried {', '.join(candidates)})")


def write_video(path, frames, fps: float = 10, keyframe_interval: int | None = None) -> Path:
    """Write uint8 frames to a video file with PyAV (for tests, benchmarks and sample data).

    path: .mp4/.mov/.mkv (H.264, else MPEG-4), .avi (MPEG-4) or .webm (VP9, else VP8).
    frames: (T, H, W[, C]) uint8 array or an iterable of (H, W[, C]) uint8 frames; grey, RGB or
        RGBA (alpha dropped). H and W must be even (yuv420p).
    keyframe_interval: frames between keyframes (default: 2 seconds' worth), which bounds the cost
        of a random seek. mp4/mov are written with the index first (faststart).
    High quality (H.264 crf 17, others ~2 bits per pixel) but lossy: expect small pixel errors.
    """
    import av

    from src_model.video.source import to_uint8_rgb  # here: source re-exports this module

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"):
        raise ValueError(f"write_video: unsupported extension {suffix!r} for '{path}'")
    codec = _pick_encoder(suffix)
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "faststart"} if suffix in (".mp4", ".m4v", ".mov") else {}
    count = 0
    try:
        with av.open(str(path), mode="w", options=options) as container:
            stream = None
            for frame in frames:
                rgb = np.asarray(frame)
                if rgb.dtype != np.uint8:
                    raise ValueError(f"write_video: frame {count} is {rgb.dtype}, expected uint8")
                rgb = to_uint8_rgb(rgb, where=f"write_video frame {count}")
                if stream is None:
                    height, width = rgb.shape[:2]
                    if height % 2 or width % 2:
                        raise ValueError(
                            f"write_video: frame size {width}x{height} must be even for yuv420p")
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    stream.codec_context.gop_size = keyframe_interval or max(1, round(2 * float(fps)))
                    if codec in ("libx264", "h264"):
                        stream.options = {"crf": "17", "preset": "veryfast"}
                    else:
                        stream.bit_rate = max(200_000, int(2 * width * height * float(fps)))
                        if codec.startswith("libvpx"):
                            stream.options = {"deadline": "realtime", "cpu-used": "8"}
                elif rgb.shape[:2] != (height, width):
                    raise ValueError(
                        f"write_video: frame {count} is {rgb.shape[1]}x{rgb.shape[0]}, expected "
                        f"{width}x{height} like frame 0")
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError(f"write_video: no frames to write to '{path}'")
            for packet in stream.encode():  # flush frames the encoder still holds
                container.mux(packet)
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a half-written file behind
        raise
    return path
