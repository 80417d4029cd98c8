"""Containers whose timestamps cannot be trusted for exact seeks, variable frame rates, several
video streams, animated PNG: every frame read in any order is the frame a plain decode gives there."""
from __future__ import annotations

import fractions
import warnings

import numpy as np
import pytest

from src_model.video.source import open_video

H, W = 48, 64


def frame_image(i: int) -> np.ndarray:
    """A different frame per index: a square moving over a red level that jumps with i (the jumps
    make encoders put keyframes at irregular places, as scene cuts do)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (i * 20) % 256
    y, x = 4 + (i * 3) % (H - 20), 4 + (i * 5) % (W - 20)
    img[y:y + 16, x:x + 16] = (255, 0, 0)
    return img


def write(path, n, codec="libx264", fmt=None, options=None, pts_ms=None):
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width, stream.pix_fmt = H, W, "yuv420p"
        if options:
            stream.options = options
        if pts_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decoded(path) -> list[np.ndarray]:
    """Every frame of the largest video stream, decoded start to end by PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = max(container.streams.video, key=lambda s: s.codec_context.width * s.codec_context.height)
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)]


def wrong_frames(path) -> list[int]:
    """Frames read wrong in an order a session uses: the first, the last (a slider dragged to the
    end), a jump back into the middle, then backward, then at random."""
    truth = decoded(path)
    with open_video(path) as source:
        assert len(source) == len(truth)
        n = len(truth)
        order = [0, n - 1, n // 2, 28 % n, *range(n - 1, -1, -1), *np.random.default_rng(0).permutation(n)]
        return sorted({i for i in order if not np.array_equal(source.get_raw(i), truth[i])})


@pytest.mark.parametrize("name, codec, fmt, options", [
    ("program.mpg", "mpeg2video", "mpeg", None),                    # MPEG-PS: seeks by bytes
    ("transport.ts", "mpeg2video", "mpegts", None),
    ("xvid_style.avi", "mpeg4", None, {"bf": "2", "g": "10"}),      # B-frames in AVI: no real pts
    ("h264_bframes.avi", "libx264", None, {"bf": "3", "g": "10"}),
])
def test_containers_without_trustworthy_seeks_read_every_frame_right(tmp_path, name, codec, fmt, options):
    path = write(tmp_path / name, 60, codec, fmt, options)
    if path.suffix == ".ts":
        path = path.rename(path.with_suffix(".mpg"))  # .ts is not a listed extension; the content decides
    assert wrong_frames(path) == []


def test_a_variable_frame_rate_recording_is_not_called_damaged(tmp_path):
    """A browser/screen recording: frames come in bursts, with pauses. No truncation warning,
    and fps is the real average, not the nominal 10."""
    pts = [0, 33, 66, 500, 533, 1500, 1533, 1566, 3000, 3033, 3066, 3100, 5000, 5033, 5066]
    for suffix, codec in ((".webm", "libvpx-vp9"), (".mkv", "libx264")):
        path = write(tmp_path / f"recording{suffix}", len(pts), codec, pts_ms=pts)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_video(path) as source:
                assert len(source) == len(pts)
                assert source.fps == pytest.approx((len(pts) - 1) / 5.066, rel=0.01)
        assert wrong_frames(path) == []


def test_of_several_video_streams_the_largest_is_read(tmp_path):
    import av

    path = tmp_path / "with_thumbnail.mkv"
    with av.open(str(path), "w") as container:  # a small 5-frame track first, the video second
        small, large = container.add_stream("libx264", rate=10), container.add_stream("libx264", rate=10)
        small.height, small.width, large.height, large.width = 24, 32, H, W
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
            if i < 5:
                container.mux(small.encode(frame.reformat(width=32, height=24)))
            container.mux(large.encode(frame))
        container.mux(small.encode())
        container.mux(large.encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor is it called truncated for the short track
        with open_video(path) as source:
            assert len(source) == 12 and source.shape[1:3] == (H, W)
    assert wrong_frames(path) == []


def test_an_animated_png_is_read_as_a_video(tmp_path):
    from PIL import Image

    frames = [frame_image(i) for i in range(8)]
    Image.fromarray(frames[0]).save(tmp_path / "anim.png", save_all=True, duration=100,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    with open_video(tmp_path / "anim.png") as source:
        assert len(source) == 8
        for i in (0, 7, 3, 2, 5):
            assert np.array_equal(source.get_raw(i), frames[i])
    Image.fromarray(frames[2]).save(tmp_path / "still.png")  # a plain PNG stays one frame
    with open_video(tmp_path / "still.png") as source:
        assert len(source) == 1 and np.array_equal(source.get_raw(0), frames[2])


def test_cover_art_is_not_taken_for_the_video(tmp_path):
    """An mp4 with a cover picture (a still stored as a larger video stream, attached_pic)."""
    import av

    path = tmp_path / "with_cover.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.height, video.width, video.pix_fmt = H, W, "yuv420p"
        cover = container.add_stream("mjpeg", rate=1)
        cover.height, cover.width, cover.pix_fmt = 240, 320, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        for i in range(20):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")))
        container.mux(video.encode())
        container.mux(cover.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 200, np.uint8),
                                                              format="rgb24")))
        container.mux(cover.encode())
    with open_video(path) as source:
        assert len(source) == 20 and source.shape[1:3] == (H, W)
        assert np.abs(source.get_raw(7).astype(int) - frame_image(7)).mean() < 12  # mpeg4 is lossy
