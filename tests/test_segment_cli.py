"""``refsam segment``: real video files in, label files and datasets out; bad input -> exit 2, one line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from src_model.cli import main
from src_model.export import read_labels
from src_model.video.source import write_video

T, H, W = 6, 64, 96
RANDOM_TINY = ["--model", "none", "--preset", "tiny", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.stack([np.stack([(xx * 2 + 9 * t) % 256, (yy * 3) % 256, np.full_like(xx, 90)], -1)
                       for t in range(T)]).astype(np.uint8)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=5)


def test_segment_writes_a_tiff_stack_and_a_dataset(mp4, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    args = ["segment", str(mp4), "--text", "the red circle", "--text", "a square",
            "--box", "2", "10", "10", "60", "40", "-o", str(out), "--dataset", str(tmp_path / "ds"),
            "--cache-dir", str(tmp_path / "cache"), *RANDOM_TINY]
    assert main(args) == 0
    labels, expressions = read_labels(out)
    assert labels.shape == (T, H, W) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert expressions == {1: ["the red circle"], 2: ["a square"]}
    assert (tmp_path / "ds" / "meta_expressions.json").is_file()
    assert len(list((tmp_path / "ds" / "Annotations" / "clip").glob("*.png"))) == T
    printed = capsys.readouterr().out.split()
    assert str(out) in printed
    # The output exists now: refused without --overwrite, before any work.
    assert main(args[:-len(RANDOM_TINY)] + RANDOM_TINY) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_segment_png_folder(mp4, tmp_path):
    out = tmp_path / "masks"
    assert main(["segment", str(mp4), "--text", "the dog", "-o", f"{out}/", *RANDOM_TINY]) == 0
    labels, _ = read_labels(out)
    assert labels.shape == (T, H, W) and set(np.unique(labels)) <= {0, 1}


@pytest.mark.parametrize("extra, message", [
    (["--text", "x", "-o", "OUT/labels.xyz"], "export format"),
    (["--text", "  ", "-o", "OUT/l.tif"], "--text is empty"),
    (["-o", "OUT/l.tif"], "nothing to segment"),
    (["--text", "x"], "-o OUT"),
    (["--text", "x", "--box", "0", "a", "1", "2", "3", "-o", "OUT/l.tif"], "--box"),
    (["--text", "x", "--image-size", "100", "-o", "OUT/l.tif"], "multiple of the patch size"),
])
def test_bad_arguments_exit_2_with_one_line(mp4, tmp_path, capsys, extra, message):
    extra = [e.replace("OUT", str(tmp_path)) for e in extra]
    assert main(["segment", str(mp4), *extra, *RANDOM_TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_missing_video_and_box_outside_frame_in_a_subprocess(mp4, tmp_path):
    missing = subprocess.run([sys.executable, "-m", "src_model.cli", "segment", str(tmp_path / "nope.mp4"),
                              "--text", "x", "-o", str(tmp_path / "l.tif"), *RANDOM_TINY],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "nope.mp4" in missing.stderr and "Traceback" not in missing.stderr
    outside = subprocess.run([sys.executable, "-m", "src_model.cli", "segment", str(mp4), "--box", "0", "10", "10",
                              "500", "40", "-o", str(tmp_path / "l.tif"), *RANDOM_TINY],
                             capture_output=True, text=True)
    assert outside.returncode == 2, outside.stderr
    assert outside.stderr.strip().count("\n") == 0 and "outside" in outside.stderr
    assert not (tmp_path / "l.tif").exists()
