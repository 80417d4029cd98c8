"""Video files through PyAV: one decoder kept open, exact seeks from a one-time packet index.

Split from readers.py (same reader surface: path, name, num_frames, frame_shape, dtype, read, close).
"""
from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np

from src_model.errors import VideoReadError

from .recent_frames import RecentFrames

class PyAVReader:
    """A video file decoded with PyAV, with cheap sequential and exact random access.

    At open, the packets are demuxed once without decoding (fast: no pixel work) to get the true
    frame count (``stream.frames`` is 0 for mkv/webm and can be wrong) and the sorted presentation
    timestamps, so frame index <-> pts is exact. One decoder stays open: a request at or shortly
    after the current position decodes forward; a backward jump, or a jump past a later keyframe,
    seeks to the keyframe at or before the target and decodes forward to the target's pts.
    Frames decoded on the way to the target are kept a while (``RecentFrames``), so reading
    backward does not decode from the keyframe again for every frame.
    A packet the decoder rejects is skipped, so one corrupt frame does not hide the ones after it.
    A display rotation (phone videos) is applied: frames come out upright, as players show them.
    """

    def __init__(self, path: Path):
        import av

        self._av = av
        self.path = path
        self.name = path.stem
        self.frames_decoded = 0  # by the decoder, ever (the probe of the first frame too): what reads cost
        try:
            self._container = av.open(str(path), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoReadError(f"cannot open video '{path}': {exc}") from exc
        try:
            self._setup()
        except Exception:
            self._container.close()
            raise

    def _setup(self) -> None:
        av = self._av
        if not self._container.streams.video:
            raise VideoReadError(f"video '{self.path}' has no video stream")
        # Of several video streams, the one the ffmpeg tool would pick: not cover art (a still
        # picture stored as a stream), then the largest frames, the first of those.
        videos = self._container.streams.video
        moving = [v for v in videos if not v.disposition & av.stream.Disposition.attached_pic] or list(videos)
        stream = self._stream = max(moving, key=lambda v: (v.codec_context.width or 0) * (v.codec_context.height or 0))
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        if not self.width or not self.height:
            raise VideoReadError(
                f"video '{self.path}': frame size unknown ({self.width}x{self.height})")
        stamps, keys, broken = [], [], False
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:  # the empty flush packet at the end carries no frame
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                stamps.append(stamp)
                if packet.is_keyframe:
                    keys.append(stamp)
        except av.error.FFmpegError:
            broken = True  # truncated/corrupt past this point: the frames demuxed so far are what exists
        if not stamps:
            raise VideoReadError(f"video '{self.path}' has no frames")
        rate = stream.average_rate or stream.guessed_rate
        timed = None not in stamps and stream.time_base is not None and len(stamps) > 1
        span = float((max(stamps) - min(stamps)) * stream.time_base) if timed else 0.0
        missing = _missing_frames(stream.frames, len(stamps), span, self._container.duration, rate)
        if broken or missing:
            import warnings

            warnings.warn(f"video '{self.path}' looks truncated or damaged: only {len(stamps)} frames"
                          f"{missing or ''} could be read", stacklevel=2)
        self.num_frames = len(stamps)
        # Phones store portrait video sideways with a display rotation: hand out frames the way
        # players show them, so expressions like "the person on the left" mean what they say.
        self.turns, self.mirrored = self._probe_orientation()
        upright = (self.width, self.height) if self.turns % 2 else (self.height, self.width)
        self.frame_shape = (*upright, 3)
        self.fps = float(rate) if rate else None
        measured = (len(stamps) - 1) / span if span > 0 else None
        if measured and (self.fps is None or abs(measured - self.fps) > 0.05 * self.fps):
            self.fps = measured  # a variable frame rate (screen or browser recordings): the real average
        self.dtype = np.dtype(np.uint8)
        # Exact mode needs a unique pts per frame, and seeks that land where the index says;
        # otherwise frames are counted from the start. MPEG program/transport streams seek by
        # bytes, and the timestamps of the first frames after a seek are off by a frame; AVI has
        # no presentation times, so with B-frames its packets' made-up ones do not match the
        # decoded frames'.
        formats = set(self._container.format.name.split(","))
        unreliable = bool(formats & {"mpeg", "mpegts", "mpegvideo"}) or (
            "avi" in formats and bool(stream.codec_context.has_b_frames))
        self._exact = not unreliable and None not in stamps and len(set(stamps)) == len(stamps)
        if self._exact:
            self._pts = sorted(stamps)
            self._index_of = {p: k for k, p in enumerate(self._pts)}
            self._keys = sorted(self._index_of[p] for p in keys) or [0]
        self._frames = None  # decoded-frame iterator, positioned at self._next
        self._next = None    # index of the next frame the iterator yields (None: unknown)
        self._matched = False  # a decoded frame's pts has matched a packet's pts
        self._recent = RecentFrames()

    def _probe_orientation(self) -> tuple[int, bool]:
        """(counter-clockwise quarter turns, np.rot90's k; mirrored) that show the first frame the
        way players do: a mirrored frame is flipped left-right first, then turned."""
        try:
            self._container.seek(0)
            for frame in self._decode():
                return _orientation(frame)
        except self._av.error.FFmpegError:
            pass
        return 0, False

    # -- decoding
    def _decode(self):
        """Frames from the current container position on; skips packets the decoder rejects."""
        av, stream = self._av, self._stream
        packets = self._container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:
                packet = None  # demuxing broke (truncated file): flush what the decoder holds
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in frames:
                self.frames_decoded += 1
                yield frame
            if packet is None:
                return

    def _seek(self, index: int) -> None:
        """Position the decoder at the keyframe at or before frame ``index``."""
        if self._exact:
            key = self._keys[max(0, bisect.bisect_right(self._keys, index) - 1)]
            offset = self._pts[min(key, index)]
        else:
            offset = None
        try:
            if offset is None:
                self._container.seek(0)
            else:
                self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        except self._av.error.FFmpegError:
            self._container.close()  # not seekable: start over from a fresh open
            index = self._stream.index
            self._container = self._av.open(str(self.path), mode="r")
            self._stream = self._container.streams[index]
        self._frames = self._decode()
        self._next = None if self._exact else 0

    def read(self, i: int) -> np.ndarray:
        passed = self._recent.pop(i)
        if passed is not None:
            return self._to_rgb(passed)
        if not self._exact:
            return self._read_counting(i)
        # Seek on a backward jump, an unknown position, or when a keyframe lies between the current
        # position and the target (decoding from it is shorter than decoding everything between).
        nearest_key = self._keys[max(0, bisect.bisect_right(self._keys, i) - 1)]
        if self._next is None or i < self._next or nearest_key > self._next:
            self._seek(i)
        restarted = False
        while True:
            previous = None if self._next is None else self._next - 1  # last frame decoded
            for frame in self._frames:
                index = self._index_of.get(frame.pts)
                if index is None:
                    if self._matched:  # one odd frame (e.g. concealed corruption): skip it
                        continue
                    # The decoder's timestamps never match the packets': count frames instead.
                    self._exact, self._next = False, None
                    return self._read_counting(i)
                self._matched = True
                self._next = index + 1
                if index == i:
                    return self._to_rgb(frame)
                if index > i:
                    if previous is None and not restarted:
                        break  # the seek landed past the target: retry from the very start
                    self._next = None
                    raise VideoReadError(
                        f"video '{self.path}': frame {i} of {self.num_frames} cannot be decoded "
                        f"(corrupt or missing; the decoder went from {_frame(previous)} to frame {index})")
                self._keep(index, frame)
                previous = index
            else:
                self._next = None
                raise VideoReadError(
                    f"video '{self.path}': frame {i} of {self.num_frames} cannot be decoded: the data "
                    f"ends or is corrupt after {_frame(previous)} (truncated or damaged file)")
            restarted = True
            self._container.seek(self._pts[0], stream=self._stream, backward=True, any_frame=False)
            self._frames, self._next = self._decode(), None

    def _read_counting(self, i: int) -> np.ndarray:
        if self._next is None or i < self._next:
            self._exact = False
            self._seek(0)
        for frame in self._frames:
            self._next += 1
            if self._next - 1 == i:
                return self._to_rgb(frame)
            self._keep(self._next - 1, frame)
        last = self._next - 1
        self._next = None
        raise VideoReadError(
            f"video '{self.path}': frame {i} of {self.num_frames} cannot be decoded: the data ends "
            f"or is corrupt after {_frame(last)} (truncated or damaged file)")

    def _keep(self, index: int, frame) -> None:
        """A frame decoded on the way to another (as decoded: planes, not yet RGB)."""
        self._recent.put(index, frame, sum(plane.buffer_size for plane in frame.planes))

    def _to_rgb(self, frame) -> np.ndarray:
        # Reformat to the stream's size too: a mid-stream resolution change must not change shapes.
        rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
        if self.mirrored:
            rgb = rgb[:, ::-1]
        return np.ascontiguousarray(np.rot90(rgb, self.turns)) if self.turns or self.mirrored else rgb

    def close(self) -> None:
        self._frames = None
        self._recent.clear()
        self._container.close()


def _missing_frames(declared: int, found: int, span: float, duration, rate) -> str | None:
    """How the file shows frames missing (fewer than it promises), or None: its frame count (mp4,
    avi), else, for containers that give none (mkv, webm), its duration against the time the
    frames span. Not duration x frame rate: with a variable frame rate that counts frames never meant."""
    if declared:
        return f" of the {declared} it declares" if declared > 1.02 * found + 1 else None  # slack: rounding
    if not duration or not rate or span <= 0:
        return None
    seconds = duration / 1e6
    if seconds - span <= 3.0 / float(rate) + 0.02 * seconds:  # the last frames' own durations, rounding
        return None
    return f", which span {span:.2f} s of the {seconds:.2f} s it declares,"


def _frame(index) -> str:
    return "the seek point (no frame decoded)" if index is None or index < 0 else f"frame {index}"


def _orientation(frame) -> tuple[int, bool]:
    """The first frame's display matrix as (quarter turns counter-clockwise, mirrored).

    FFmpeg's matrix maps stored (x, y) to shown (a x + c y, b x + d y) (a, b, c, d = entries 0, 1,
    3, 4). A negative determinant mirrors: flipping x first leaves the rotation (-a, -b, c, d),
    whose angle is read as FFmpeg's av_display_rotation_get reads it (what PyAV's
    ``frame.rotation`` gives for unmirrored matrices). No matrix (or an older PyAV): as stored.
    """
    matrix = next((np.frombuffer(bytes(side), "<i4") for side in getattr(frame, "side_data", ())
                   if str(getattr(side, "type", "")).endswith("DISPLAYMATRIX")), None)
    if matrix is None or len(matrix) < 9:
        return round(getattr(frame, "rotation", 0) / 90) % 4, False
    a, b, c, d = (float(matrix[k]) for k in (0, 1, 3, 4))
    mirrored = a * d - b * c < 0
    if mirrored:
        a, b = -a, -b
    degrees = -math.degrees(math.atan2(b / (math.hypot(b, d) or 1), a / (math.hypot(a, c) or 1)))
    return round(degrees / 90) % 4, mirrored
