"""Tests for src_model.video.source: every format written for real into tmp_path, then read back."""
from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

from src_model.errors import VideoReadError
from src_model.video.source import VideoSource, open_video, to_uint8_rgb, write_video

T, H, W = 24, 48, 64


def smooth_frames(t=T, h=H, w=W) -> np.ndarray:
    """(t, h, w, 3) uint8 gradients that move a little per frame: compress well and lose little."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = [np.stack([(xx * 3 + k * 4), (yy * 4 + k * 3), np.full_like(xx, 40 + k * 7)], -1)
              for k in range(t)]
    return (np.clip(np.stack(frames), 0, 255)).astype(np.uint8)


class CountingArray:
    """Array-like that records every __getitem__ key and refuses to be converted whole."""

    def __init__(self, data, fail_at=None):
        self.data, self.keys, self.fail_at = data, [], fail_at
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        self.keys.append(key)
        if self.fail_at is not None and key == self.fail_at:
            raise OSError("disk read failed")
        return self.data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was converted")


# ------------------------------------------------------------------------------- video files


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    frames = smooth_frames()
    path = write_video(tmp_path_factory.mktemp("v") / "clip.mp4", frames, fps=10, keyframe_interval=6)
    return path, frames


def test_mp4_round_trip_and_metadata(mp4):
    path, frames = mp4
    src = open_video(path)
    assert len(src) == src.num_frames == T
    assert (src.height, src.width) == (H, W) and src.shape == (T, H, W, 3)
    assert src.name == "clip" and src.path == path
    assert src.raw_dtype == np.uint8 and src.raw_shape == (T, H, W, 3)
    assert src.contrast_limits is None
    for i in range(T):
        frame = src[i]
        assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
        assert np.abs(frame.astype(int) - frames[i]).mean() < 6, i
    assert np.array_equal(src[-1], src[T - 1])
    with pytest.raises(IndexError, match="out of range"):
        src[T]
    with pytest.raises(IndexError):
        src[-T - 1]
    src.close()


@pytest.mark.parametrize("ext", ["mp4", "avi", "mov", "mkv", "webm"])
def test_random_access_equals_sequential_bit_exactly(tmp_path, ext):
    path = write_video(tmp_path / f"v.{ext}", smooth_frames(), fps=10, keyframe_interval=5)
    src = open_video(path)
    assert len(src) == T  # counted by demuxing (stream.frames is 0 for mkv/webm)
    sequential = [frame for _, frame in src.iter_frames()]
    order = np.random.default_rng(1).permutation(T).tolist() + [3, 2, 1, 0, T - 1, 0]
    for i in order:
        assert np.array_equal(src[i], sequential[i]), (ext, i)


def test_sequential_is_cheap_and_jumps_seek_to_a_keyframe(mp4):
    src = open_video(mp4[0])
    reader = src._reader
    reader.frames_decoded = 0  # opening decoded the first frame once (its display matrix)
    for i in range(T):  # sequential: each frame decodes about one more frame
        src[i]
    assert reader.frames_decoded <= T + 2
    keys = src._reader._keys
    assert len(keys) > 2
    for target in (keys[1] + 1, keys[-1] + 1, keys[2]):  # backward and forward jumps
        before = reader.frames_decoded
        src[target]
        gap = target - max(k for k in keys if k <= target)
        # a seek starts at the keyframe: never the whole prefix from frame 0
        assert reader.frames_decoded - before <= gap + 4 < target


def test_write_video_rejects_odd_sizes_and_empty(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    assert not (tmp_path / "odd.mp4").exists()
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "none.mp4", [])


@pytest.mark.parametrize("budget", [None, 5])
def test_reading_backward_does_not_decode_from_the_keyframe_for_every_frame(tmp_path, budget):
    """A backward pass (a propagation from a late prompt towards the start) over a video with one
    keyframe: the frames decoded on the way to the first are kept, not decoded again for each.
    With room for only ``budget`` frames it restarts every ``budget`` frames, still exact."""
    t = 60
    path = write_video(tmp_path / "one_gop.mp4", smooth_frames(t), fps=10, keyframe_interval=1000)
    src = open_video(path, prefetch=0)
    sequential = [frame for _, frame in src.iter_frames()]
    src.close()
    src = open_video(path, prefetch=0)
    if budget is not None:
        src._reader._recent.budget = budget * H * W * 3 // 2  # yuv420p frames
    reader = src._reader
    reader.frames_decoded = 0  # opening decoded the first frame once (its display matrix)
    for i in reversed(range(t)):
        assert np.array_equal(src[i], sequential[i]), i
    # No buffer: t + (t - 1) + ... + 1 = 1830 decodes; a full one: t; room for 5: ~t^2 / (2 * 5).
    assert reader.frames_decoded <= (t + 1 if budget is None else t * t // (2 * budget) + 2 * t)


def test_a_gif_read_backward_is_exact_and_not_rewound_for_every_frame(tmp_path, monkeypatch):
    from PIL import GifImagePlugin, Image

    frames = smooth_frames(40, 20, 30)
    frames[:, :, :8] = 255  # a still part: later GIF frames store only what changed
    Image.fromarray(frames[0]).save(tmp_path / "long.gif", save_all=True, duration=40, loop=0,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    src = open_video(tmp_path / "long.gif", prefetch=0)
    forward = [src[i] for i in range(len(src))]
    steps, step = [0], GifImagePlugin.GifImageFile._seek

    def counting(image, frame, *args, **kwargs):
        steps[0] += 1
        return step(image, frame, *args, **kwargs)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", counting)
    for i in reversed(range(len(src))):
        assert np.array_equal(src[i], forward[i]), i
    assert steps[0] <= 2 * len(src)  # one rewind and pass, not one per frame (~800)
    src.close()


def test_gif(tmp_path):
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    frames = np.zeros((len(colours), 20, 30, 3), np.uint8)
    for k, c in enumerate(colours):
        frames[k, :, : 10 + 4 * k] = c  # distinct frames, so PIL does not merge any
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "anim.gif", save_all=True, append_images=images[1:], duration=50, loop=0)
    src = open_video(tmp_path / "anim.gif")
    assert src.shape == (5, 20, 30, 3) and src.name == "anim"
    for i in [4, 0, 2, 3, 1]:
        assert np.array_equal(src[i], frames[i]), i


# ------------------------------------------------------------------------------- TIFF


def test_tiff_rgb_and_grey(tmp_path):
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    src = open_video(tmp_path / "rgb.tif")
    assert src.shape == (5, 16, 24, 3) and src.raw_shape == (5, 16, 24, 3)
    assert all(np.array_equal(src[i], rgb[i]) for i in range(5))

    grey = rgb[..., 0]
    tifffile.imwrite(tmp_path / "grey.tiff", grey)
    src = open_video(tmp_path / "grey.tiff")
    assert src.raw_shape == (5, 16, 24) and src.contrast_limits is None
    assert np.array_equal(src.get_raw(2), grey[2])
    assert np.array_equal(src[2], np.repeat(grey[2][..., None], 3, axis=2))

    tifffile.imwrite(tmp_path / "one.tif", grey[0])  # a single 2D page is a 1-frame video
    assert open_video(tmp_path / "one.tif").shape == (1, 16, 24, 3)


def test_tiff_compressed_pages_are_read_per_frame(tmp_path):
    import tifffile

    rgb = np.random.default_rng(1).integers(0, 256, (6, 16, 24, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", rgb, photometric="rgb", compression="zlib")
    src = open_video(tmp_path / "z.tif")
    assert src._reader._memmap is None  # not memory-mappable: the page path is exercised
    assert [np.array_equal(src[i], rgb[i]) for i in (5, 0, 3)] == [True] * 3


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_written_one_frame_at_a_time_is_every_frame(tmp_path, compression):
    """tifffile's TiffWriter.write per frame stores one series per image: all are the video."""
    import tifffile

    rgb = np.random.default_rng(3).integers(0, 256, (7, 16, 24, 3), dtype=np.uint8)
    deep = rgb[..., 0].astype(np.uint16) * 200
    for name, stack in (("rgb.tif", rgb), ("deep.tif", deep)):
        with tifffile.TiffWriter(tmp_path / name) as tif:
            for frame in stack:
                tif.write(frame, compression=compression)
        assert len(tifffile.TiffFile(tmp_path / name).series) == 7  # the case this test is about
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # all are frames: nothing is left out
            src = open_video(tmp_path / name)
        assert src.raw_shape == stack.shape
        assert [np.array_equal(src.get_raw(i), stack[i]) for i in (6, 0, 3)] == [True] * 3
        src.close()


def test_tiff_series_of_another_shape_after_the_frames_are_left_out_by_name(tmp_path):
    import tifffile

    grey = np.random.default_rng(4).integers(0, 256, (4, 16, 24), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as tif:
        for frame in grey:
            tif.write(frame)
        tif.write(grey[0, :8, :12])  # e.g. a thumbnail
        tif.write(grey[1])  # after the thumbnail: not joined to the frames before it
    with pytest.warns(UserWarning, match="holds 6 image series; the first 4, one image each,.* the 2 after"):
        src = open_video(tmp_path / "thumb.tif")
    assert src.raw_shape == (4, 16, 24) and np.array_equal(src.get_raw(3), grey[3])


def test_tiff_16bit_scaling(tmp_path):
    import tifffile

    data = np.random.default_rng(2).integers(1000, 3000, (6, 20, 20)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", data)
    src = open_video(tmp_path / "deep.tif")
    assert src.raw_dtype == np.uint16 and np.array_equal(src.get_raw(4), data[4])
    lo, hi = src.contrast_limits  # 6 frames of 400 values: every value is sampled
    assert (lo, hi) == pytest.approx(tuple(np.percentile(data.astype(float), [0.5, 99.5])))
    expected = np.clip(np.rint((data[4] - lo) * 255.0 / (hi - lo)), 0, 255)
    assert np.abs(src[4][..., 0].astype(int) - expected).max() <= 1
    assert src[4][..., 0].min() == 0 and src[4][..., 0].max() == 255  # clipped outliers

    src = open_video(tmp_path / "deep.tif", contrast_limits=(1000, 2020))  # 4 units per level
    raw = np.array([[1000, 1400, 2020, 3000, 500]], np.uint16)
    assert to_uint8_rgb(raw, src.contrast_limits)[0, :, 0].tolist() == [0, 100, 255, 255, 0]
    exact = np.clip(np.rint((data[1].astype(float) - 1000) / 4), 0, 255)
    assert np.array_equal(src[1][..., 1], exact.astype(np.uint8))


def test_imagej_hyperstack_time_axis(tmp_path):
    import tifffile

    data = np.arange(7 * 10 * 12, dtype=np.uint8).reshape(7, 10, 12)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "TYX"})
    src = open_video(tmp_path / "ij.tif")
    assert src.raw_shape == (7, 10, 12)
    assert np.array_equal(src.get_raw(6), data[6])

    stack = np.random.default_rng(3).integers(0, 256, (4, 1, 3, 10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "tzc.tif", stack, imagej=True, metadata={"axes": "TZCYX"})
    src = open_video(tmp_path / "tzc.tif")  # C=3 becomes RGB, Z=1 is squeezed, T is time
    assert src.raw_shape == (4, 10, 12, 3)
    assert np.array_equal(src[2], np.moveaxis(stack[2, 0], 0, -1))

    tifffile.imwrite(tmp_path / "tz.tif", np.zeros((3, 2, 10, 12), np.uint8), imagej=True,
                     metadata={"axes": "TZYX"})
    with pytest.raises(VideoReadError, match="tz.tif.*T, Z"):
        open_video(tmp_path / "tz.tif")


# ------------------------------------------------------------------------------- folders


def test_frame_folder_natural_order(tmp_path):
    from PIL import Image

    for value, name in [(10, "1.png"), (20, "2.png"), (100, "10.png"), (30, "3.png")]:
        Image.fromarray(np.full((8, 6, 3), value, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    src = open_video(tmp_path)
    assert src.name == tmp_path.name and src.shape == (4, 8, 6, 3)
    assert [int(src[i][0, 0, 0]) for i in range(4)] == [10, 20, 30, 100]
    ident = src.identity()
    assert ident.startswith("folder:") and ident == open_video(tmp_path).identity()
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(tmp_path / "11.png")
    assert open_video(tmp_path).identity() != ident


def test_frame_folder_mixed_sizes(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / "f1.png")
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / "f2.png")
    Image.fromarray(np.zeros((9, 6), np.uint8)).save(tmp_path / "f10.png")
    with pytest.raises(VideoReadError, match=r"frame 2 'f10.png'.* 6x9 .*expected 6x8 like 'f1.png'"):
        open_video(tmp_path)


# ------------------------------------------------------------------------------- arrays


def test_numpy_memmap_dask_and_list(tmp_path):
    import dask.array as da

    frames = np.random.default_rng(4).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    mm = np.memmap(tmp_path / "f.dat", dtype=np.uint8, mode="w+", shape=frames.shape)
    mm[:] = frames
    mm.flush()
    for video in (frames, np.memmap(tmp_path / "f.dat", np.uint8, "r", shape=frames.shape),
                  da.from_array(frames, chunks=(1, 6, 7, 3)), list(frames)):
        src = open_video(video)
        assert src.name == "array" and src.path is None and src.shape == (5, 6, 7, 3)
        assert all(np.array_equal(src[i], frames[i]) for i in range(5))
        assert isinstance(src[0], np.ndarray)
    assert open_video(src) is src

    raw = VideoSource(frames).get_raw(1)
    assert not raw.flags.writeable  # may be a view of the caller's array: read-only
    out = VideoSource(frames)[1]
    out[:] = 0  # src[i] is a fresh array: the caller's data is untouched
    assert np.array_equal(frames[1], np.random.default_rng(4).integers(0, 256, (5, 6, 7, 3),
                                                                        dtype=np.uint8)[1])


def test_array_conversions():
    grey = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(open_video(grey)[1], np.repeat(grey[1][..., None], 3, 2))
    assert np.array_equal(open_video(grey[..., None])[1], np.repeat(grey[1][..., None], 3, 2))
    rgba = np.random.default_rng(5).integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    assert np.array_equal(open_video(rgba)[0], rgba[0, ..., :3])
    mask = np.zeros((1, 2, 2), bool)
    mask[0, 0, 1] = True
    assert open_video(mask)[0][..., 0].tolist() == [[0, 255], [0, 0]]
    floats = np.array([[[0.0, 0.5], [1.0, np.nan]]], np.float32)
    assert open_video(floats, contrast_limits=(0, 1))[0][..., 2].tolist() == [[0, 128], [255, 0]]


def test_identity_of_arrays_and_files(tmp_path, mp4):
    a = np.random.default_rng(6).integers(0, 256, (30, 4, 4), dtype=np.uint8)
    b = a.copy()
    b[-1, 0, 0] ^= 1
    assert open_video(a).identity() == open_video(a.copy()).identity()
    assert open_video(a).identity() != open_video(b).identity()
    assert open_video(a).identity() != open_video(a.astype(np.uint16)).identity()
    assert open_video(a, contrast_limits=(0, 9)).identity() != open_video(a).identity()
    path = tmp_path / "c.mp4"
    path.write_bytes(mp4[0].read_bytes())
    ident = open_video(path).identity()
    assert ident.startswith("file:") and str(path.resolve()) in ident
    path.write_bytes(mp4[0].read_bytes() + b"\0")
    assert open_video(path).identity() != ident


def test_memmap_of_1000_frames_is_lazy(tmp_path):
    mm = np.memmap(tmp_path / "big.dat", np.uint16, "w+", shape=(1000, 64, 64))
    mm[500] = 7
    mm.flush()
    t0 = time.perf_counter()
    src = open_video(np.memmap(tmp_path / "big.dat", np.uint16, "r", shape=(1000, 64, 64)),
                     contrast_limits=(0, 7))
    assert time.perf_counter() - t0 < 0.5
    assert src.shape == (1000, 64, 64, 3) and int(src[500][0, 0, 0]) == 255

    counting = CountingArray(np.arange(1000 * 16, dtype=np.uint8).reshape(1000, 4, 4))
    src = open_video(counting)
    assert counting.keys == []  # opening reads nothing
    assert np.array_equal(src[5], np.repeat(counting.data[5][..., None], 3, 2))
    assert counting.keys == [5]  # exactly one frame read
    src.get_raw(5)
    assert counting.keys == [5]  # the last frame is kept


def test_dask_reads_only_the_requested_chunk():
    import dask.array as da

    counting = CountingArray(np.arange(200 * 9, dtype=np.uint8).reshape(200, 3, 3))
    src = open_video(da.from_array(counting, chunks=(1, 3, 3), asarray=False))
    counting.keys.clear()
    frame = src[42]
    assert np.array_equal(frame[..., 0], counting.data[42])
    assert len(counting.keys) == 1  # one chunk computed: frame 42, nothing else
    first = counting.keys[0][0]
    assert first == 42 or (first.start, first.stop) == (42, 43)


# ------------------------------------------------------------------------------- iteration


def _frame_threads():
    return [t for t in threading.enumerate() if t.name.startswith("refsam-frames")]


def test_iter_frames_order_and_prefetch_bound():
    counting = CountingArray(np.arange(100 * 4, dtype=np.uint8).reshape(100, 2, 2))
    src = open_video(counting, prefetch=3)
    got = list(src.iter_frames([5, 1, -1, 3]))
    assert [i for i, _ in got] == [5, 1, 99, 3]
    assert all(np.array_equal(f[..., 0], counting.data[i]) for i, f in got)
    with pytest.raises(IndexError):
        src.iter_frames([0, 100])  # indices are checked at the call, before any thread starts

    counting.keys.clear()
    gen = src.iter_frames()
    assert next(gen)[0] == 0
    deadline = time.monotonic() + 5
    while len(counting.keys) < 1 + 3 and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker reads ahead while the consumer does nothing
    time.sleep(0.1)
    assert 1 + 3 <= len(counting.keys) <= 1 + 3 + 1  # bounded: queue of 3 plus one in hand
    assert len(_frame_threads()) == 1
    gen.close()  # early close stops and joins the worker
    assert _frame_threads() == []
    reads = len(counting.keys)
    time.sleep(0.1)
    assert len(counting.keys) == reads

    assert [i for i, _ in open_video(counting, prefetch=0).iter_frames([2, 0])] == [2, 0]
    assert len(list(src)) == 100


def test_iter_frames_raises_at_the_failing_frame():
    src = open_video(CountingArray(np.zeros((6, 2, 2), np.uint8), fail_at=3))
    seen = []
    with pytest.raises(VideoReadError, match="frame 3.*disk read failed"):
        for i, _ in src.iter_frames():
            seen.append(i)
    assert seen == [0, 1, 2]
    assert _frame_threads() == []


def test_concurrent_reads_while_iterating(mp4):
    """A display thread calling get_raw while a worker iterates: both get the right frames."""
    src = open_video(mp4[0], prefetch=2)
    reference = [src[i] for i in range(T)]
    errors = []

    def display():
        for i in np.random.default_rng(9).integers(0, T, 40):
            if not np.array_equal(src.get_raw(int(i)), reference[int(i)]):
                errors.append(int(i))

    thread = threading.Thread(target=display)
    thread.start()
    for i, frame in src.iter_frames():
        assert np.array_equal(frame, reference[i]), i
    thread.join()
    assert errors == []


# ------------------------------------------------------------------------------- bad input


def test_corrupt_and_empty_files(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(7).bytes(20000))
    with pytest.raises(VideoReadError, match="noise.mp4"):
        open_video(tmp_path / "noise.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mp4.*no frames"):
        open_video(tmp_path / "empty.mp4")
    (tmp_path / "bad.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(VideoReadError, match="bad.tif"):
        open_video(tmp_path / "bad.tif")


def test_truncated_mp4(tmp_path):
    # Noise makes every frame about equally large, so half the bytes hold about half the frames.
    noise = np.random.default_rng(8).integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    full = open_video(write_video(tmp_path / "full.mp4", noise, keyframe_interval=6))
    data = full.path.read_bytes()  # write_video puts the index first (faststart)
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="half.mp4' looks truncated or damaged"):
        src = open_video(tmp_path / "half.mp4")  # opens: only the packets present are counted, with a warning
    assert 2 < len(src) < T
    first_bad = None
    for i in range(len(src)):
        try:
            src[i]
        except VideoReadError as exc:
            first_bad = i
            assert f"frame {i} of {len(src)}" in str(exc) and "half.mp4" in str(exc)
            break
    assert first_bad is not None and first_bad >= 1  # the cut-off last frame fails ...
    for i in (first_bad - 1, 0):  # ... earlier frames stay readable, identical to the full file's
        assert np.array_equal(src[i], full[i])
    with pytest.raises(VideoReadError, match=f"frame {first_bad} "):
        list(src.iter_frames())

    import av

    # Matroska declares no frame count, only a duration: a cut file still warns, the whole one does not.
    with av.open(str(tmp_path / "full.mkv"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(open_video(tmp_path / "full.mkv")) == T
    data = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "half.mkv").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"half.mkv' looks truncated or damaged: only \d+ frames, which span .* s of the .* s it declares"):
        assert 0 < len(open_video(tmp_path / "half.mkv")) < T

    # an mp4 with its index at the end cannot be opened when cut in half

    with av.open(str(tmp_path / "tail.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in smooth_frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = (tmp_path / "tail.mp4").read_bytes()
    (tmp_path / "tail.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="cannot open video .*tail.mp4"):
        open_video(tmp_path / "tail.mp4")


def test_bad_arguments(tmp_path):
    with pytest.raises(VideoReadError, match="has no frames"):
        open_video(np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(VideoReadError, match="1, 3 or 4 channels.*2 channels"):
        open_video(np.zeros((3, 4, 4, 2), np.uint8))
    with pytest.raises(VideoReadError, match=r"looks channels-first \(T, C, H, W\).*np.moveaxis"):
        open_video(np.zeros((3, 3, 40, 96), np.uint8))
    with pytest.raises(VideoReadError, match=r"\(T, H, W\)"):
        open_video(np.zeros((4, 4), np.uint8))
    (tmp_path / "clip.xyz").write_bytes(b"data")
    with pytest.raises(VideoReadError, match=r"'\.xyz'.*supported: \.mp4"):
        open_video(tmp_path / "clip.xyz")
    with pytest.raises(VideoReadError, match="does not exist"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(VideoReadError, match="has no frames"):
        open_video(tmp_path / "empty_dir")
    with pytest.raises(VideoReadError, match="contrast_limits"):
        open_video(np.zeros((1, 2, 2), np.uint16), contrast_limits=(5, 5))
    src = open_video(np.zeros((2, 2, 2), np.uint8))
    src.close()
    with pytest.raises(VideoReadError, match="closed"):
        src[0]
