"""Export dataset…: the corrected labels of a session, its expressions and the video's frames go
into a Ref-YouTube-VOS-style dataset that refsam train reads (annotate, correct, fine-tune)."""
from __future__ import annotations

import numpy as np
import pytest

from refsam_napari_helpers import TEXT, open_with_widget, paint_square, wait_idle

OTHER = "the blue square"

pytestmark = pytest.mark.gui


def test_a_corrected_session_becomes_a_dataset_that_trains(make_napari_viewer, qtbot, mp4, tiny_model, tmp_path,
                                                            notes):
    from src_model.cli import main
    from src_model.data.ytvos import read_dataset

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, mp4, tiny_model)
    assert not widget.export_button.isEnabled()  # nothing to export yet
    for text in (TEXT, OTHER):
        assert widget.segment(text)
        wait_idle(qtbot, widget)
    paint_square(viewer, widget.labels_layer, 4, 1, centre=(20, 30), size=10)  # a correction
    wait_idle(qtbot, widget)
    assert 4 in widget.session.keyframes[1]
    root = tmp_path / "dataset"
    assert widget.export_button.isEnabled() and widget.export_dataset(root)
    wait_idle(qtbot, widget)
    assert "Added to the dataset" in widget.status.text()
    video = read_dataset(root)["clip"]
    assert len(video) == len(widget.session.labels) and video.texts(1) == [TEXT] and video.texts(2) == [OTHER]
    assert np.array_equal(video.load_labels(), widget.session.labels)  # the corrected labels, exactly
    frames = video.load_frames([0, 7])
    assert np.abs(frames.astype(int) - np.stack([widget.session.source[0], widget.session.source[7]])).mean() < 4
    # Adding it again asks first: declined, the dataset is left as it was.
    before = (root / "meta_expressions.json").read_bytes()
    assert not widget.export_dataset(root, overwrite=False)
    assert "already in" in notes.messages() and (root / "meta_expressions.json").read_bytes() == before
    assert widget.status.text() == "Nothing was exported."  # not the first export's "Added to ..."
    # Replacing is refused up front when the video's folder holds files an export did not write.
    (root / "JPEGImages" / "clip" / "notes.txt").write_text("mine")
    assert not widget.export_dataset(root, overwrite=True)
    assert "cannot add to" in notes.messages() and (root / "JPEGImages" / "clip" / "notes.txt").is_file()
    (root / "JPEGImages" / "clip" / "notes.txt").unlink()
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--steps", "1", "--batch-size", "1", "--num-frames", "2",
                 "--device", "cpu", "--no-progress", "--from-scratch", "--image-size", "64", "--out", str(out)]) == 0
    assert (out / "refsam.safetensors").is_file()


def test_a_cancelled_export_leaves_the_dataset_as_it_was(tmp_path, mp4, tiny_model):
    from src_model import VideoSession
    from src_model.errors import CancelledError

    from napari_refsam._dataset_export import export_job
    from napari_refsam._workers import CancelToken

    session = VideoSession(tiny_model, str(mp4))
    try:
        session.add_object(frame=0, box=(10, 10, 40, 40))
        list(session.propagate())
        token = CancelToken()
        token.cancel()
        with pytest.raises(CancelledError):
            list(export_job(session, tmp_path / "dataset", "clip", False, token))
        assert not (tmp_path / "dataset" / "JPEGImages" / "clip").exists()
        assert not (tmp_path / "dataset" / "meta_expressions.json").exists()
    finally:
        session.close()
