"""Evaluation: J&F on a small synthetic split, interactive GT corrections, DAVIS averaging, submissions."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from src_model.evaluate import evaluate_dataset, evaluate_expression, summarize


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    from src_model.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, 2, seed=11, split="valid", num_frames=5, size=(64, 64))
    return root


def test_dataset_scores_are_in_range_and_rounds_are_reported(tiny_model, small_split, tmp_path):
    from src_model.data.ytvos import read_dataset

    result = evaluate_dataset(tiny_model, small_split, "valid", interactive=2, progress=False,
                              submission=tmp_path / "sub.zip")
    videos = read_dataset(small_split, "valid")
    assert result["num_videos"] == 2
    assert result["num_expressions"] == sum(len(v.expressions) for v in videos.values())
    for key in ("J", "F", "J&F"):
        assert 0.0 <= result[key] <= 1.0
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2]
    assert result["rounds"][0]["J&F"] == pytest.approx(result["J&F"])
    assert len(result["per_object"]) == sum(len(v.object_ids) for v in videos.values())
    with zipfile.ZipFile(tmp_path / "sub.zip") as archive:
        names = set(archive.namelist())
    video = next(iter(videos.values()))
    exp_id = video.expressions[0][0]
    assert f"Annotations/{video.name}/{exp_id}/{video.frame_names[0]}.png" in names
    assert len(names) == sum(len(v) * len(v.expressions) for v in videos.values())


def test_gt_corrections_lock_the_worst_frames(tiny_model, small_split):
    """Each round corrects the worst uncorrected frame; corrected frames score J == 1 from then on."""
    from src_model.data.ytvos import read_dataset
    from src_model.video.session import VideoSession

    video = next(iter(read_dataset(small_split, "valid").values()))
    labels = video.load_labels()
    _, text, obj = video.expressions[0]
    with VideoSession(tiny_model, video.load_frames()) as session:
        result = evaluate_expression(session, text, labels == obj, interactive=3)
        assert session.objects == {}  # the expression's object is removed afterwards
    rounds, corrected = result["rounds"], result["corrected"]
    assert len(rounds) == 4 and len(corrected) == 3 and len(set(corrected)) == 3
    assert corrected[0] == int(np.argmin(rounds[0]["J_per_frame"]))
    for r in range(1, 4):
        for frame in corrected[:r]:
            assert rounds[r]["J_per_frame"][frame] == 1.0
            assert rounds[r]["J_per_frame"][frame] >= rounds[r - 1]["J_per_frame"][frame]
        assert 0.0 <= rounds[r]["J&F"] <= 1.0


def test_davis_protocol_averages_the_four_sets():
    rows = []
    for s, value in zip(("annot1_first", "annot1_full", "annot2_first", "annot2_full"), (0.2, 0.4, 0.6, 0.8)):
        for obj, delta in ((1, 0.0), (2, 0.1)):
            rows.append({"video": "v", "obj_id": obj, "set": s, "J": value + delta, "F": value,
                         "J&F": value + delta / 2, "rounds": [{"J": value + delta, "F": value,
                                                               "J&F": value + delta / 2}]})
    out = summarize(rows, 1, davis=True, interactive=0)
    assert out["davis_sets"]["annot1_first"]["J"] == pytest.approx(0.25)
    assert out["J"] == pytest.approx(np.mean([0.25, 0.45, 0.65, 0.85]))
    assert out["F"] == pytest.approx(0.5)
    assert out["J&F"] == pytest.approx((out["J"] + out["F"]) / 2)


def test_eval_cli_json(tiny_model, small_split, tmp_path, capsys):
    from src_model.cli import main
    from src_model.weights import ALL_PARTS, save_refsam

    weights = save_refsam(tiny_model, tmp_path / "tiny.safetensors", parts=ALL_PARTS)
    rc = main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights),
               "--device", "cpu", "--max-videos", "1", "--interactive", "1", "--json",
               "--output", str(tmp_path / "result.json")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_videos"] == 1 and len(printed["rounds"]) == 2
    assert json.loads((tmp_path / "result.json").read_text())["J&F"] == printed["J&F"]
    assert printed["image_size"] == tiny_model.config.sam.image_size
    assert main(["eval", "--data", str(tmp_path / "nothing"), "--model", str(weights)]) == 2
    # --image-size runs the encoder at another input size, and says so; a size off the patch grid is refused.
    assert main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights), "--device", "cpu",
                 "--max-videos", "1", "--json", "--image-size", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == 64
    assert main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights),
                 "--image-size", "100"]) == 2
    assert "multiple of the patch size" in capsys.readouterr().err


def test_a_dataset_without_ground_truth_is_refused_not_scored_nan(tiny_model, small_split, tmp_path, capsys):
    import shutil

    from src_model.cli import main
    from src_model.weights import ALL_PARTS, save_refsam

    weights = save_refsam(tiny_model, tmp_path / "tiny.safetensors", parts=ALL_PARTS)
    bare = tmp_path / "bare"
    shutil.copytree(small_split, bare)
    shutil.rmtree(bare / "valid" / "Annotations")
    common = ["eval", "--data", str(bare), "--split", "valid", "--model", str(weights), "--device", "cpu"]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and "--submission" in err and "nan" not in err
    # Predictions for a server need no ground truth.
    assert main([*common, "--submission", str(tmp_path / "sub.zip"), "--max-videos", "1"]) == 0
    assert zipfile.ZipFile(tmp_path / "sub.zip").namelist()
    for extra, message in ((["--max-videos", "0"], "--max-videos"),
                           (["--output", str(tmp_path / "missing" / "r.json")], "does not exist")):
        assert main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights), *extra]) == 2
        assert message in capsys.readouterr().err
