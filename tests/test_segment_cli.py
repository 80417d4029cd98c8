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
    (["--click", "0", "-o", "OUT/l.tif"], "--click takes FRAME then X,Y"),
    (["--click", "0", "5,5,2", "-o", "OUT/l.tif"], "--click takes FRAME then X,Y"),
    (["--click", "0", "5;5", "-o", "OUT/l.tif"], "--click takes FRAME then X,Y"),
    (["--click", "0", "5,5,0", "-o", "OUT/l.tif"], "--click on frame 0: points without a box need at least one"),
    (["--click", "9", "5,5", "-o", "OUT/l.tif"], "--click on frame 9: frame 9 is out of range"),
    (["--click", "1", "500,5", "-o", "OUT/l.tif"], "outside the 96x64 frame"),
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
    outside = subprocess.run([sys.executable, "-m", "src_model.cli", "segment", str(mp4), "--box", "0", "500", "10",
                              "600", "40", "-o", str(tmp_path / "l.tif"), *RANDOM_TINY],
                             capture_output=True, text=True)
    assert outside.returncode == 2, outside.stderr
    assert outside.stderr.strip().count("\n") == 0 and "outside" in outside.stderr
    assert not (tmp_path / "l.tif").exists()


def test_overwrite_never_replaces_a_folder_holding_other_files(mp4, tmp_path, capsys):
    # The input video inside the output folder, and a stranger file: both must survive --overwrite.
    folder = tmp_path / "work"
    folder.mkdir()
    video = folder / "clip.mp4"
    video.write_bytes(mp4.read_bytes())
    assert main(["segment", str(video), "--text", "x", "-o", f"{folder}/", "--overwrite", *RANDOM_TINY]) == 2
    assert "is or holds the input video" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["segment", str(mp4), "--text", "x", "-o", f"{other}/", "--overwrite", *RANDOM_TINY]) == 2
    err = capsys.readouterr().err
    assert "did not write (notes.txt)" in err and err.strip().count("\n") == 0
    assert video.read_bytes() == mp4.read_bytes() and (other / "notes.txt").read_text() == "mine"
    # Reached through a symbolic link, the input is still recognised.
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert main(["segment", str(link / "clip.mp4"), "--text", "x", "-o", f"{folder}/", "--overwrite",
                 *RANDOM_TINY]) == 2
    assert "is or holds the input video" in capsys.readouterr().err and video.read_bytes() == mp4.read_bytes()
    # A folder holding only an earlier PNG export is replaced.
    masks = tmp_path / "masks"
    assert main(["segment", str(mp4), "--text", "x", "-o", f"{masks}/", *RANDOM_TINY]) == 0
    (masks / "00099.png").write_bytes((masks / "00000.png").read_bytes())  # a frame the new export lacks
    assert main(["segment", str(mp4), "--text", "x", "-o", f"{masks}/", "--overwrite", *RANDOM_TINY]) == 0
    assert sorted(p.name for p in masks.glob("*.png")) == [f"{t:05d}.png" for t in range(T)]


@pytest.mark.parametrize("extra, message", [
    (["-o", "OUT/missing/l.tif"], "does not exist"),
    (["-o", "VIDEO/l.tif"], "is not a folder"),
    (["--dataset", "VIDEO"], "is a file, not a dataset folder"),
    (["--dataset", "FILE"], "is a file, not a dataset folder"),
    (["-o", "OUT/l.tif", "--cache-dir", "FILE"], "is a file, not a folder for the feature cache"),
    (["-o", "OUT/l.tif", "--image-size", "100000"], "between 32 and 1024"),
    (["-o", "OUT/l.tif", "--device", "mps"], "MPS"),
    (["-o", "OUT/dir.tif"], "is a folder; name a .tif/.json file"),  # not "pass --overwrite"
    (["-o", "OUT/dir.tif", "--overwrite"], "is a folder; name a .tif/.json file"),
    (["-o", "OUT/.tif"], "names no file, only an ending"),  # not a hidden PNG folder ".tif"
    (["-o", "OUT/l.tif", "--dataset", "OUT/ds", "--name", ""], "--name is empty"),
    (["-o", "OUT/l.json", "--name", " "], "--name is empty"),  # the exports carry the name too
    (["-o", "OUT/l.tif", "--dataset", "OUT/ds", "--name", "a/b"], "must be a plain folder name"),
])
def test_outputs_and_settings_are_checked_before_any_work(mp4, tmp_path, capsys, extra, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir.tif").mkdir()
    extra = [e.replace("OUT", str(tmp_path)).replace("VIDEO", str(mp4)).replace("FILE", str(tmp_path / "file.txt"))
             for e in extra]
    assert main(["segment", str(mp4), "--text", "x", *RANDOM_TINY, *extra]) == 2  # extra last: its --device wins
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def faststart_mp4(path, frames: int):
    """An mp4 of random frames with its index first and the data after (so a cut file still opens)."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_a_video_that_breaks_midway_keeps_the_frames_before_it(tmp_path, capsys):
    path = faststart_mp4(tmp_path / "cut.mp4", 24)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # the index still promises frames the data lacks
    out = tmp_path / "l.tif"
    assert main(["segment", str(path), "--text", "x", "-o", str(out), "--batch-size", "4", *RANDOM_TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be decoded" in err and f"written to {out}" in err
    done = int(err.split("; the ")[1].split(" frame")[0])
    first_bad, total = (int(v) for v in err.split("frame ")[1].split(" cannot")[0].split(" of "))
    assert 0 < done == first_bad < total <= 24  # every frame before the bad one, even those in its encoder batch
    labels, _ = read_labels(out)
    assert labels.shape == (total, H, W)


def test_a_video_whose_first_frame_cannot_be_decoded_writes_nothing(tmp_path, capsys):
    path = faststart_mp4(tmp_path / "cut.mp4", 8)
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"mdat") + 40])  # the first frame's data is cut short
    out = tmp_path / "l.tif"
    assert main(["segment", str(path), "--text", "x", "-o", str(out), *RANDOM_TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "frame 0 of" in err and "cannot be decoded" in err and "written" not in err
    assert not out.exists()  # no empty label file in the way of the next try


def test_dataset_problems_are_found_before_any_work_and_name_renames(mp4, tmp_path, capsys):
    import json

    import tifffile

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta_expressions.json").write_text('{"videos": [')
    out = tmp_path / "l.tif"
    assert main(["segment", str(mp4), "--text", "x", "-o", str(out), "--dataset", str(broken), *RANDOM_TINY]) == 2
    assert "not valid JSON" in capsys.readouterr().err and not out.exists()  # refused before segmenting
    ds = tmp_path / "ds"
    assert main(["segment", str(mp4), "--text", "x", "--dataset", str(ds), *RANDOM_TINY]) == 0
    # The same file stem again: refused up front; --name adds it under another name.
    assert main(["segment", str(mp4), "--text", "y", "-o", str(out), "--dataset", str(ds), *RANDOM_TINY]) == 2
    assert "--name" in capsys.readouterr().err and not out.exists()
    assert main(["segment", str(mp4), "--text", "y", "-o", str(out), "--dataset", str(ds), "--name", "take2",
                 *RANDOM_TINY]) == 0
    videos = json.loads((ds / "meta_expressions.json").read_text())["videos"]
    assert sorted(videos) == ["clip", "take2"] and videos["take2"]["expressions"]["0"]["exp"] == "y"
    with tifffile.TiffFile(out) as tif:  # the video's name and frame rate travel with the labels
        meta = tif.imagej_metadata
    assert "video: take2" in meta["Info"] and meta["finterval"] == pytest.approx(1 / 5)


def test_a_run_logged_to_a_file_reports_progress_in_plain_lines(mp4, tmp_path):
    # stderr is a file here, not a terminal: tqdm would stay silent; the log gets plain lines.
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        rc = subprocess.run([sys.executable, "-m", "src_model.cli", "segment", str(mp4), "--text", "a square",
                             "-o", str(tmp_path / "l.tif"), *RANDOM_TINY[:-1]],
                            stderr=handle, stdout=subprocess.DEVNULL, timeout=300).returncode
    assert rc == 0
    lines = [line for line in log.read_text().splitlines() if line.startswith("segment clip:")]
    assert lines and lines[-1].startswith(f"segment clip: {T}/{T} frames (100%)"), log.read_text()
    assert "\r" not in log.read_text()


def test_clicks_make_the_objects_the_engine_makes_from_them(tmp_path):
    """--click, with a click on each object and one on its neighbour (what the widget's clicks
    layer sends), gives exactly the labels of a session given the same clicks, on the bundled
    model; here it follows the clearest object through the mp4."""
    from src_model.data.synthetic import generate_clip
    from src_model.evaluate import prompt_from_mask
    from src_model.video.session import VideoSession
    from src_model.video.source import open_video
    from src_model.weights import load_refsam

    clip = generate_clip(4, num_frames=6, size=(96, 128), num_objects=3)
    video = write_video(tmp_path / "clip.mp4", clip.frames, fps=5)
    frame, prompts, args = 1, [], []
    for obj in sorted(clip.objects):
        truth, others = clip.labels[frame] == obj, (clip.labels[frame] != obj) & (clip.labels[frame] != 0)
        prompt = prompt_from_mask(truth, "click-neg", others)
        prompts.append(prompt)
        args += ["--click", str(frame), *(f"{x},{y}" if label else f"{x},{y},0"
                                          for (x, y), label in zip(prompt["points"], prompt["labels"]))]
    out = tmp_path / "labels.tif"
    assert main(["segment", str(video), *args, "-o", str(out), "--device", "cpu", "--quiet"]) == 0
    labels, _ = read_labels(out)
    with open_video(video) as source, VideoSession(load_refsam("default", device="cpu"), source) as session:
        for prompt in prompts:
            session.add_object(frame=frame, **prompt)
        list(session.propagate())
        assert np.array_equal(labels, np.asarray(session.labels))
    truth, predicted = clip.labels == 1, labels == 1  # a cobalt oval, apart from the two pink shapes
    assert np.mean([(predicted[t] & truth[t]).sum() / (predicted[t] | truth[t]).sum() for t in range(6)]) >= 0.9
