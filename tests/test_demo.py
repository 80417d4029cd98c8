"""``refsam demo --headless`` with the bundled model: the README's main job."""
from __future__ import annotations

import numpy as np
import pytest

from src_model.weights import BUNDLED


def test_overlay_colours_only_labelled_pixels():
    from src_model.commands.demo import overlay

    frames = np.full((2, 4, 4, 3), 100, np.uint8)
    labels = np.zeros((2, 4, 4), np.uint16)
    labels[1, 1:3, 1:3] = 1
    out = overlay(frames, labels)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert (out[0] == 100).all() and (out[1, 0, 0] == 100).all()
    assert not (out[1, 1, 1] == 100).all()  # DAVIS colour 1 is red: (128, 0, 0)


def test_demo_headless_with_the_bundled_model(tmp_path, capsys):
    import tifffile

    from src_model.cli import main
    from src_model.commands.demo import sample_clip

    assert BUNDLED["default"].is_file(), "the bundled model src_model/weights/refsam_tiny_synthetic.safetensors is missing"
    rc = main(["demo", "--headless", "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "J&F" in out and "mean over" in out
    labels = tifffile.imread(tmp_path / "labels.tif")
    clip = sample_clip()
    assert labels.shape == clip.labels.shape
    assert set(np.unique(labels)) <= set(clip.objects) | {0}
    assert (tmp_path / "overlay.mp4").stat().st_size > 1000


def test_demo_with_a_missing_model_fails_with_a_clear_message(tmp_path, capsys):
    from src_model.cli import main

    rc = main(["demo", "--headless", "--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "none.safetensors" in err and "not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["demo", "--help"]])
def test_demo_help(argv, capsys):
    from src_model.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "--headless" in capsys.readouterr().out
