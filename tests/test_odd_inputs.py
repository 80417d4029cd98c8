"""Odd real-world inputs and exports: rotated phone videos, misnamed files, unusual shapes."""
from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import tifffile

from src_model.cli import main
from src_model.errors import VideoReadError
from src_model.export import read_labels
from src_model.video.source import open_video, write_video

RANDOM_TINY = ["--model", "none", "--preset", "tiny", "--device", "cpu", "--quiet"]


def frames(t=3, h=32, w=48) -> np.ndarray:
    """(t, h, w, 3) uint8: a bright block in the top-left corner on a gradient, so turns show."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.stack([np.stack([xx * 4 + 9 * k, yy * 6, np.full_like(xx, 60)], -1) for k in range(t)])
    out[:, : h // 4, : w // 4] = 250
    return np.clip(out, 0, 255).astype(np.uint8)


def rotate_mp4(src, dst, matrix) -> None:
    """Copy an mp4, setting its track header's display matrix (what phones write for portrait video)."""
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0  # version 0 header
    offset = tkhd + 4 + 4 + 5 * 4 + 8 + 4 * 2  # version/flags, times, ids, duration, reserved, layer...
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    dst.write_bytes(bytes(data))


# 16.16 fixed point a, b, u, c, d, v, x, y, w: a portrait phone clip shown turned 90 degrees clockwise.
CLOCKWISE = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
HALF_TURN = (-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000)


def test_rotated_video_is_read_upright(tmp_path):
    plain = write_video(tmp_path / "plain.mp4", frames())
    rotate_mp4(plain, tmp_path / "portrait.mp4", CLOCKWISE)
    rotate_mp4(plain, tmp_path / "upside_down.mp4", HALF_TURN)
    with open_video(plain) as src, open_video(tmp_path / "portrait.mp4") as turned, \
            open_video(tmp_path / "upside_down.mp4") as flipped:
        assert (turned.height, turned.width) == (48, 32) and turned.shape == (3, 48, 32, 3)
        assert (flipped.height, flipped.width) == (32, 48)
        for i in (0, 2, 1):  # the same bitstream: exactly the plain frames, turned
            assert np.array_equal(turned[i], np.rot90(src[i], -1))
            assert np.array_equal(flipped[i], np.rot90(src[i], 2))
        assert turned.get_raw(0).flags.c_contiguous
        assert turned[0][:8, -8:].mean() > 240  # the top-left block is now top-right


@pytest.mark.parametrize("matrix, shown", [
    ((-0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000), lambda f: f[:, ::-1]),  # mirrored left-right
    ((0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000), lambda f: f[::-1]),  # upside down, not turned
    ((0, 0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000), lambda f: f.transpose(1, 0, 2)),  # x and y swapped
    ((0, -0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000), lambda f: f.transpose(1, 0, 2)[::-1, ::-1]),
])
def test_a_mirrored_video_is_read_as_players_show_it(tmp_path, matrix, shown):
    """Display matrices that mirror (a negative determinant): shown = stored (x, y) -> (a x + c y, b x + d y)."""
    plain = write_video(tmp_path / "plain.mp4", frames())
    rotate_mp4(plain, tmp_path / "mirrored.mp4", matrix)
    with open_video(plain) as src, open_video(tmp_path / "mirrored.mp4") as mirrored:
        assert mirrored.shape[1:3] == shown(src[0]).shape[:2]
        for i in (0, 2, 1):
            assert np.array_equal(mirrored[i], shown(src[i]))


def test_segment_rotated_video_labels_have_the_upright_shape(tmp_path):
    rotate_mp4(write_video(tmp_path / "plain.mp4", frames()), tmp_path / "portrait.mp4", CLOCKWISE)
    out = tmp_path / "labels.tif"
    assert main(["segment", str(tmp_path / "portrait.mp4"), "--box", "0", "2", "30", "20", "46",
                 "-o", str(out), *RANDOM_TINY]) == 0
    assert read_labels(out)[0].shape == (3, 48, 32)


def test_more_objects_than_a_palette_png_holds_are_refused_before_any_work(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", frames(t=2))
    boxes = ["--box", "0", "1", "1", "20", "20"] * 256  # object i is label i: 256 needs more than uint8
    for target in (["-o", f"{tmp_path / 'masks'}/"], ["-o", str(tmp_path / "l.tif"), "--dataset", str(tmp_path / "ds")]):
        assert main(["segment", str(video), *boxes, *target, *RANDOM_TINY]) == 2
        assert "256 objects do not fit" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # nothing written, no model run


def test_a_tiff_stack_with_a_video_extension_is_read_as_the_whole_stack(tmp_path):
    stack = frames(t=5)
    tifffile.imwrite(tmp_path / "stack.mp4", stack, photometric="rgb")  # FFmpeg alone sees one image
    with open_video(tmp_path / "stack.mp4") as src:
        assert src.num_frames == 5 and np.array_equal(src[4], stack[4])


def test_tiff_pages_that_are_not_one_series_are_named_in_a_warning(tmp_path):
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        for h in (32, 30, 32):  # a page of another size splits the file into three series
            tif.write(np.full((h, 48), 9, np.uint8))
    with pytest.warns(UserWarning, match="holds 3 image series; only the first"):
        with open_video(tmp_path / "mixed.tif") as src:
            assert src.num_frames == 1


def test_a_tiff_of_complex_numbers_is_refused_by_name(tmp_path, capsys):
    import warnings

    tifffile.imwrite(tmp_path / "fft.tif", np.ones((3, 16, 16), np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not converted with numpy's "discards the imaginary part"
        with pytest.raises(VideoReadError, match=r"fft.tif': pixels of type complex64 are not an image"):
            open_video(tmp_path / "fft.tif")
    out = tmp_path / "l.tif"
    assert main(["segment", str(tmp_path / "fft.tif"), "--text", "x", "-o", str(out), *RANDOM_TINY]) == 2
    assert "not an image" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("shape", [(3, 5, 1), (1, 5, 1), (3, 1, 1), (3, 1, 5), (4, 6, 4)])
def test_label_tiff_of_one_pixel_wide_frames_round_trips(tmp_path, shape):
    from src_model.export import write_labels

    labels = (np.arange(np.prod(shape)).reshape(shape) % 7).astype(np.uint16)
    write_labels(tmp_path / "l.tif", labels, {1: ["a"]}, fps=5)
    back, expressions = read_labels(tmp_path / "l.tif")
    assert back.shape == shape and np.array_equal(back, labels) and expressions == {1: ["a"]}
    assert len(tifffile.TiffFile(tmp_path / "l.tif").pages) == shape[0]  # one page per frame, for Fiji


def test_frames_with_an_exif_orientation_are_read_upright(tmp_path):
    """Phone photos are stored sideways with an EXIF orientation; viewers (and now RefSAM) turn them."""
    from PIL import Image

    stored = frames(t=3)  # (3, 32, 48, 3)
    folder = tmp_path / "burst"
    folder.mkdir()
    for i, frame in enumerate(stored):
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 clockwise to show"
        Image.fromarray(frame).save(folder / f"{i}.png", exif=exif)
    with open_video(folder) as src:
        assert src.num_frames == 3 and src.shape[1:] == (48, 32, 3)
        assert np.array_equal(src[2], np.rot90(stored[2], k=-1))  # clockwise
