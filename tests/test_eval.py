"""Evaluation: J&F on a small synthetic split, interactive GT corrections, DAVIS averaging, submissions."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from src_model.evaluate import evaluate_dataset, evaluate_expression, prompt_from_mask, summarize


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


@pytest.mark.parametrize("kind", ["box", "click-neg"])
def test_prompt_corrections_lock_the_models_prediction_from_the_users_prompt(tiny_model, small_split, kind,
                                                                              monkeypatch):
    """--correct-with box / click-neg: each round predicts, on the worst frame not yet tried, from that
    prompt drawn for the ground truth (predict_mask, as Correct from prompts does) and locks it when
    it is better there than what the frame had; otherwise the round is spent and nothing is locked."""
    from src_model.data.ytvos import read_dataset
    from src_model.metrics import jaccard
    from src_model.video.session import VideoSession

    kept = undone = 0
    for video in read_dataset(small_split, "valid").values():
        labels = video.load_labels()
        for _, text, obj in video.expressions:
            gt, others = labels == obj, (labels != obj) & (labels != 0)
            with VideoSession(tiny_model, video.load_frames()) as session:
                locked = []
                set_mask = session.set_mask
                monkeypatch.setattr(session, "set_mask", lambda o, t, m: locked.append((t, m)) or set_mask(o, t, m))
                result = evaluate_expression(session, text, gt, interactive=2, correct_with=kind, others=others)
                rounds = result["rounds"]
                tried = [r["frame"] for r in rounds[1:]]
                assert len(rounds) == 3 and len(set(tried)) == 2
                assert result["corrected"] == [r["frame"] for r in rounds[1:] if not r["undone"]]
                assert result["rejected"] == [r["frame"] for r in rounds[1:] if r["undone"]]
                assert [t for t, _ in locked] == result["corrected"]  # only what was kept was locked
                for r, frame in enumerate(tried, start=1):
                    predicted = (session.predict_mask(frame, **prompt_from_mask(gt[frame], kind, others[frame]))
                                 if gt[frame].any() else np.zeros_like(gt[frame]))
                    before = rounds[r - 1]["J_per_frame"][frame]
                    if rounds[r]["undone"]:
                        undone += 1
                        assert jaccard(predicted, gt[frame]) <= before
                        assert rounds[r]["J_per_frame"] == rounds[r - 1]["J_per_frame"]
                    else:
                        kept += 1
                        assert np.array_equal(dict(locked)[frame], predicted)
                        assert rounds[r]["J_per_frame"][frame] == pytest.approx(jaccard(predicted, gt[frame]))
                        assert rounds[r]["J_per_frame"][frame] > before
    assert kept and undone  # both paths ran (random weights: predictions help on some frames, not others)


def test_summaries_count_the_corrections_kept_and_undone():
    rows = [{"video": "v", "obj_id": 1, "J": 0.5, "F": 0.5, "J&F": 0.5, "corrected": [3, 1], "rejected": [0],
             "rounds": [{"J": 0.5, "F": 0.5, "J&F": 0.5}] * 4},
            {"video": "v", "obj_id": 2, "J": 0.7, "F": 0.7, "J&F": 0.7, "corrected": [], "rejected": [2, 4, 5],
             "rounds": [{"J": 0.7, "F": 0.7, "J&F": 0.7}] * 4}]
    out = summarize(rows, 1, davis=False, interactive=3)
    assert out["corrections"] == 2 and out["rejected_corrections"] == 4


def test_prompts_from_a_mask_are_its_tight_box_and_a_click_on_it():
    ring = np.zeros((20, 30), bool)
    ring[4:15, 6:25] = True
    ring[7:12, 9:22] = False  # the centre of a ring is not on it
    assert prompt_from_mask(ring, "box") == {"box": (6, 4, 24, 14)}  # x1, y1: the last column, row
    click = prompt_from_mask(ring, "click")
    (x, y), = click["points"]
    assert click["labels"] == [1] and ring[y, x]
    assert (y, x) in {(6, 15), (12, 15)}  # on the ring, as near its centre (9.5, 15.5) as it gets


def test_three_clicks_sit_on_the_mask_in_both_halves_and_a_negative_click_on_the_neighbour():
    bar = np.zeros((20, 40), bool)
    bar[8:12, 4:36] = True  # longer across: split into a left and a right half
    clicks = prompt_from_mask(bar, "clicks")
    assert clicks["labels"] == [1, 1, 1] and all(bar[y, x] for x, y in clicks["points"])
    xs = sorted(x for x, _ in clicks["points"])
    assert xs[0] < 20 <= xs[2] and xs[0] < xs[1] < xs[2]  # the centre, and one click in each half
    neighbour = np.zeros_like(bar)
    neighbour[2:6, 30:38] = True
    neighbour[14:19, 18:22] = True  # the nearer one to the bar's centre (19.5, 9.5)
    negative = prompt_from_mask(bar, "click-neg", neighbour)
    (px, py), (nx, ny) = negative["points"]
    assert negative["labels"] == [1, 0] and bar[py, px] and (nx, ny) == (19, 14)
    alone = prompt_from_mask(bar, "click-neg", np.zeros_like(bar))  # no neighbour: background next to it
    (nx, ny) = alone["points"][1]
    assert not bar[max(0, ny - 2): ny + 3, max(0, nx - 2): nx + 3].any() and abs(ny - 9.5) <= 6


def test_a_negative_click_in_the_box_goes_on_what_else_the_box_holds():
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False
    box = (5, 5, 24, 24)
    assert prompt_from_mask(ring, "box-neg") == {"box": box, "points": [(14, 14)], "labels": [0]}  # the hole
    neighbour = np.zeros_like(ring)
    neighbour[12:14, 16:18] = True  # something in the hole, and something outside the box
    neighbour[0:3, 0:3] = True
    assert prompt_from_mask(ring, "box-neg", neighbour) == {"box": box, "points": [(16, 13)], "labels": [0]}
    square = np.zeros_like(ring)
    square[5:25, 5:25] = True  # fills its box, the neighbour outside it: no negative click
    assert prompt_from_mask(square, "box-neg", neighbour & ~square) == {"box": box}


@pytest.mark.parametrize("prompt", ["box", "click", "clicks", "click-neg", "box-neg"])
def test_prompted_objects_are_scored_one_row_per_object_from_their_first_frame(tiny_model, small_split, prompt):
    from src_model.data.ytvos import read_dataset

    result = evaluate_dataset(tiny_model, small_split, "valid", interactive=1, progress=False, prompt=prompt)
    expected = []
    for name, video in read_dataset(small_split, "valid").items():
        labels = video.load_labels()
        for obj in sorted({o for _, _, o in video.expressions if o is not None}):
            shown = np.flatnonzero((labels == obj).any((1, 2)))
            if len(shown):
                expected.append((name, obj, f"{prompt} @ frame {shown[0]}"))
    assert [(r["video"], r["obj_id"], r["text"]) for r in result["per_expression"]] == expected
    assert result["num_expressions"] == len(expected) and [r["round"] for r in result["rounds"]] == [0, 1]
    for row in result["per_expression"]:
        assert 0.0 <= row["J&F"] <= 1.0 and len(row["corrected"]) == 1
    with pytest.raises(ValueError, match="not with the Ref-DAVIS17"):
        evaluate_dataset(tiny_model, small_split, "valid", davis=True, prompt=prompt)


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
    assert printed["num_videos"] == 1 and len(printed["rounds"]) == 2 and printed["correct_with"] == "mask"
    assert json.loads((tmp_path / "result.json").read_text())["J&F"] == printed["J&F"]
    assert printed["image_size"] == tiny_model.config.sam.image_size
    assert main(["eval", "--data", str(tmp_path / "nothing"), "--model", str(weights)]) == 2
    assert main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights), "--device", "cpu",
                 "--max-videos", "1", "--interactive", "2", "--correct-with", "box"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("after 1 correction(s) from box prompts: J ")
    assert lines[-1].endswith("corrections undone: the mask from the prompt was no better on its frame")
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


# --- the CLI contract: outputs checked before any work, replaced only with --overwrite ----------------


def _strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as JavaScript and most other parsers do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def weights(tiny_model, tmp_path_factory):
    from src_model.weights import ALL_PARTS, save_refsam

    return save_refsam(tiny_model, tmp_path_factory.mktemp("weights") / "tiny.safetensors", parts=ALL_PARTS)


def test_eval_refuses_bad_outputs_before_the_model_loads(small_split, tmp_path, capsys):
    """A missing --model shows the order: each output problem is reported instead of the model's."""
    import shutil

    from src_model.cli import main

    data = tmp_path / "ds"
    shutil.copytree(small_split, data)
    meta = data / "valid" / "meta_expressions.json"
    original = meta.read_bytes()
    (tmp_path / "folder").mkdir()
    (tmp_path / "mine.json").write_text("mine")
    (tmp_path / "mine.zip").write_text("mine")
    common = ["eval", "--data", str(data), "--split", "valid", "--model", str(tmp_path / "missing.safetensors")]
    for extra, message in (
        (["--output", str(meta), "--overwrite"], "inside the dataset"),  # even with --overwrite
        (["--submission", str(data / "sub.zip"), "--overwrite"], "inside the dataset"),
        (["--output", str(tmp_path / "folder")], "is a folder; name a .json file"),
        (["--submission", str(tmp_path / "folder"), "--overwrite"], "is a folder; name the .zip file"),
        (["--output", str(tmp_path / "mine.json")], "already exists; pass --overwrite"),
        (["--submission", str(tmp_path / "mine.zip")], "already exists; pass --overwrite"),
        (["--output", str(tmp_path / "r"), "--submission", str(tmp_path / "r")], "both name"),
        (["--prompt", "box", "--submission", str(tmp_path / "s.zip")], "scores objects, not expressions"),
        (["--correct-with", "box"], "add --interactive K"),
    ):
        assert main([*common, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "missing.safetensors" not in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert meta.read_bytes() == original and not (data / "sub.zip").exists()
    assert (tmp_path / "mine.json").read_text() == "mine" and (tmp_path / "mine.zip").read_text() == "mine"


def test_eval_replaces_an_existing_output_only_with_overwrite(weights, small_split, tmp_path, capsys):
    from src_model.cli import main

    result = tmp_path / "result.json"
    result.write_text("mine")
    common = ["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights), "--device", "cpu",
              "--max-videos", "1", "--output", str(result)]
    assert main(common) == 2
    assert "--overwrite" in capsys.readouterr().err and result.read_text() == "mine"
    assert main([*common, "--overwrite"]) == 0
    assert _strict_json(result.read_text())["num_videos"] == 1


def test_eval_prints_the_scores_before_writing_the_output(weights, small_split, tmp_path, capsys, monkeypatch):
    """A write that fails at the end (full disk) must not lose an evaluation's scores."""
    import contextlib

    import src_model.atomic
    from src_model.cli import main

    @contextlib.contextmanager
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
        yield

    monkeypatch.setattr(src_model.atomic, "atomic_file", full_disk)
    rc = main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights), "--device", "cpu",
               "--max-videos", "1", "--output", str(tmp_path / "result.json")])
    captured = capsys.readouterr()
    assert rc == 2 and "No space left" in captured.err
    assert "J&F" in captured.out


def test_eval_json_has_null_not_nan_when_nothing_is_scored(weights, small_split, tmp_path, capsys):
    import shutil

    from src_model.cli import main

    bare = tmp_path / "bare"
    shutil.copytree(small_split, bare)
    shutil.rmtree(bare / "valid" / "Annotations")
    rc = main(["eval", "--data", str(bare), "--split", "valid", "--model", str(weights), "--device", "cpu",
               "--max-videos", "1", "--submission", str(tmp_path / "sub.zip"), "--json",
               "--output", str(tmp_path / "result.json")])
    assert rc == 0
    for text in (capsys.readouterr().out, (tmp_path / "result.json").read_text()):
        result = _strict_json(text)
        assert result["num_expressions"] == 0 and result["J&F"] is None and result["per_object_mean"]["J"] is None


def test_eval_interactive_rounds_stop_when_every_frame_is_corrected(weights, small_split, tmp_path, capsys):
    """5-frame videos: --interactive 7 runs 5 rounds; rounds 6 and 7 are not reported as if they ran."""
    from src_model.cli import main

    assert main(["eval", "--data", str(small_split), "--split", "valid", "--model", str(weights), "--device", "cpu",
                 "--max-videos", "1", "--interactive", "7", "--output", str(tmp_path / "result.json")]) == 0
    out = capsys.readouterr().out
    assert "after 5 correction(s)" in out and "after 6 correction(s)" not in out
    assert "--interactive 7: only 5 round(s) run" in out
    result = _strict_json((tmp_path / "result.json").read_text())
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2, 3, 4, 5] and result["interactive"] == 7
    for row in result["per_expression"]:
        assert len(row["rounds"]) == 6 and sorted(row["corrected"]) == [0, 1, 2, 3, 4]
