"""Synthetic referring videos, the Ref-YouTube-VOS / Ref-DAVIS17 format, and training clips."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from src_model.atomic import OutputExistsError
from src_model.data import loader, synthetic, ytvos
from src_model.data.loader import RefClipDataset, collate, sample_frame_indices, swap_left_right
from src_model.data.synthetic import COLOURS, HOLDOUT_COMBOS, SHAPES, generate_clip, write_synthetic_dataset
from src_model.errors import DatasetFormatError

RELATION_WORDS = ("above", "below", "over", "under", "beneath", "of")


def _colour_words(text: str) -> set[str]:
    words = set(text.split())
    return {name for name, (_, syn) in COLOURS.items() if words & set(syn)}


# ----------------------------------------------------------------------------- synthetic
def test_generate_is_deterministic_and_seeds_differ():
    a, b, c = generate_clip(7), generate_clip(7), generate_clip(8)
    assert a.name == "synth_000007"
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert a.objects == b.objects
    assert not np.array_equal(a.frames, c.frames)
    h = generate_clip(7, holdout=True)
    assert not np.array_equal(a.frames, h.frames)


def test_clip_shapes_and_object_counts():
    for seed in range(20):
        clip = generate_clip(seed, num_frames=5, size=(96, 112))
        assert clip.frames.shape == (5, 96, 112, 3) and clip.frames.dtype == np.uint8
        assert clip.labels.shape == (5, 96, 112) and clip.labels.dtype == np.uint16
        assert 2 <= len(clip.objects) <= 5
        assert set(np.unique(clip.labels)) <= {0, *clip.objects}
    assert len(generate_clip(3, num_objects=4).objects) == 4


def test_masks_are_exact_visible_pixels():
    for seed in range(15):
        clip = generate_clip(seed)
        for k, obj in clip.objects.items():
            mask = clip.labels == k
            assert mask.any()  # every object shows somewhere in the clip
            if obj["texture"] == "flat":
                # Flat objects are drawn in exactly their colour; occluded pixels belong to the
                # object in front, so every labelled pixel shows this object's colour.
                assert (clip.frames[mask] == COLOURS[obj["color"]][0]).all()
        # The union of masks covers every pixel drawn in a flat object's exact colour (the dull
        # background never takes those values).
        for k, obj in clip.objects.items():
            if obj["texture"] != "flat":
                continue
            same = (clip.frames == COLOURS[obj["color"]][0]).all(-1)
            assert (clip.labels[same] != 0).all()


def test_labels_equal_rasterised_shapes_in_draw_order():
    # Re-draw every shape from its stored parameters: a pixel belongs to the last-drawn shape
    # covering it, so labels are exactly the visible masks after occlusion.
    occluded = 0
    for seed in range(6):
        clip = generate_clip(seed, num_objects=5, size=(64, 64))
        for t in range(clip.labels.shape[0]):
            expected = np.zeros((64, 64), np.uint16)
            for k, obj in clip.objects.items():
                hit = synthetic._rasterise(obj, clip.centres[k - 1, t], obj["angle0"] + obj["omega"] * t, 64, 64)
                ys, xs, mask, _, _ = hit
                occluded += int((expected[ys, xs][mask] > 0).sum())
                expected[ys, xs][mask] = k
            assert np.array_equal(clip.labels[t], expected)
    assert occluded > 0  # the generator does make objects overlap


def test_holdout_combos():
    for seed in range(40):
        for obj in generate_clip(seed).objects.values():
            assert (obj["color"], obj["shape"]) not in HOLDOUT_COMBOS
    for seed in range(15):
        combos = {(o["color"], o["shape"]) for o in generate_clip(seed, holdout=True).objects.values()}
        assert combos & HOLDOUT_COMBOS
    assert len(HOLDOUT_COMBOS) >= 4 and len(SHAPES) >= 5 and len(COLOURS) >= 7


def test_expressions_unique_and_name_the_object():
    for seed in range(30):
        clip = generate_clip(seed, holdout=seed % 3 == 0)
        all_texts = [t for o in clip.objects.values() for t in o["expressions"]]
        assert len(all_texts) == len(set(all_texts)), all_texts
        for obj in clip.objects.values():
            texts = obj["expressions"]
            assert 2 <= len(texts) <= 4
            first = texts[0].split()
            assert set(first) & set(COLOURS[obj["color"]][1])
            assert any(word in texts[0] for word in SHAPES[obj["shape"]])
            for text in texts:
                if not set(text.split()) & set(RELATION_WORDS):
                    assert _colour_words(text) <= {obj["color"]}, (text, obj)


def test_motion_and_position_words_are_true():
    checked = 0
    for seed in range(40):
        clip = generate_clip(seed)
        for k, obj in clip.objects.items():
            x = clip.centres[k - 1, :, 0]
            for text in obj["expressions"]:
                if "moving to the left" in text or "heading to the left" in text:
                    assert x[-1] < x[0] - 3
                    checked += 1
                if "moving to the right" in text or "heading to the right" in text:
                    assert x[-1] > x[0] + 3
                    checked += 1
                if text.endswith("on the left"):
                    assert x.max() < 0.5 * clip.frames.shape[2]
                    checked += 1
    assert checked > 0


def test_generation_speed():
    generate_clip(0)
    start = time.perf_counter()
    for seed in range(20):
        generate_clip(seed)
    assert (time.perf_counter() - start) / 20 < 0.05


# ----------------------------------------------------------------------------- ytvos format
def _video(seed=0, t=3, h=24, w=32, ids=(1, 2)):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    labels = np.zeros((t, h, w), np.uint16)
    for i, obj in enumerate(ids):
        labels[:, 2 + 4 * i:6 + 4 * i, 3:3 + 5 * (i + 1)] = obj
    return frames, labels


def test_write_read_roundtrip(tmp_path):
    frames, labels = _video()
    texts = {1: ["the left thing", "a red box"], 2: ["the other one"]}
    ytvos.write_video(tmp_path, "vid_a", frames, labels, texts)
    ds = ytvos.read_dataset(tmp_path)
    video = ds["vid_a"]
    assert video.frame_names == ["00000", "00001", "00002"]
    assert np.array_equal(video.load_labels(), labels)
    assert video.load_labels().dtype == np.uint16
    assert video.load_frames().shape == frames.shape
    assert np.abs(video.load_frames().astype(int) - frames).mean() < 40  # JPEG, random noise
    assert [(o, t) for _, t, o in video.expressions] == [(1, "the left thing"), (1, "a red box"), (2, "the other one")]
    meta = json.loads((tmp_path / "meta_expressions.json").read_text())
    assert meta["videos"]["vid_a"]["expressions"]["2"] == {"exp": "the other one", "obj_id": "2"}
    with Image.open(tmp_path / "Annotations" / "vid_a" / "00000.png") as png:
        assert png.mode == "P"
        assert png.getpalette()[3:6] == [128, 0, 0]  # DAVIS colour of object 1
    lab, by_obj = ytvos.read_video_labels(tmp_path, "vid_a")
    assert np.array_equal(lab, labels) and by_obj == texts


def test_append_keeps_first_video_and_refuses_duplicates(tmp_path):
    frames, labels = _video()
    ytvos.write_video(tmp_path, "first", frames, labels, {1: ["a"], 2: ["b"]})
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "first" in p.parts)
    before = {p: p.read_bytes() for p in files}
    f2, l2 = _video(seed=1, t=2, ids=(1,))
    ytvos.write_video(tmp_path, "second", f2, l2, {1: ["c"]})
    assert {p: p.read_bytes() for p in files} == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and "first" in p.parts) == files
    ds = ytvos.read_dataset(tmp_path)
    assert list(ds) == ["first", "second"] and np.array_equal(ds["first"].load_labels(), labels)
    with pytest.raises(OutputExistsError):
        ytvos.write_video(tmp_path, "first", f2, l2, {1: ["c"]})
    ytvos.write_video(tmp_path, "first", f2, l2, {1: ["c"]}, overwrite=True)
    assert len(ytvos.read_dataset(tmp_path)["first"]) == 2
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


def test_ids_above_255_refused(tmp_path):
    frames, labels = _video()
    labels[1, 0, 0] = 300
    with pytest.raises(DatasetFormatError, match="300"):
        ytvos.write_video(tmp_path, "v", frames, labels, {1: ["x"]})
    assert not (tmp_path / "JPEGImages" / "v").exists()


def test_malformed_json_names_file(tmp_path):
    frames, labels = _video()
    ytvos.write_video(tmp_path, "v", frames, labels, {1: ["x"]})
    meta = tmp_path / "meta_expressions.json"
    meta.write_text('{"videos": {"v": ')
    with pytest.raises(DatasetFormatError, match="meta_expressions.json.*JSON"):
        ytvos.read_dataset(tmp_path)
    meta.write_text(json.dumps({"videos": {"v": {"frames": ["00000"]}}}))
    with pytest.raises(DatasetFormatError, match="expressions"):
        ytvos.read_dataset(tmp_path)
    meta.write_text(json.dumps({"videos": {"v": {"frames": ["00000", "00009"], "expressions": {}}}}))
    with pytest.raises(DatasetFormatError, match="00009.jpg"):
        ytvos.read_dataset(tmp_path)


def test_wrong_size_png_names_file(tmp_path):
    frames, labels = _video()
    ytvos.write_video(tmp_path, "v", frames, labels, {1: ["x"]})
    bad = tmp_path / "Annotations" / "v" / "00001.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad)
    with pytest.raises(DatasetFormatError, match="00001.png"):
        ytvos.read_dataset(tmp_path)["v"].load_labels()


def test_released_layout_with_split(tmp_path):
    frames, labels = _video()
    ytvos.write_video(tmp_path / "train", "v", frames, labels, {1: ["x"]})
    (tmp_path / "meta_expressions" / "train").mkdir(parents=True)
    released = tmp_path / "meta_expressions" / "train" / "meta_expressions.json"
    (tmp_path / "train" / "meta_expressions.json").rename(released)
    ds = ytvos.read_dataset(tmp_path, "train")
    assert np.array_equal(ds["v"].load_labels(), labels)
    with pytest.raises(DatasetFormatError, match="split"):
        ytvos.read_dataset(tmp_path)


def test_ref_davis_text_files(tmp_path):
    frames, labels = _video()
    jpg, ann = tmp_path / "JPEGImages" / "480p" / "bike", tmp_path / "Annotations" / "480p" / "bike"
    jpg.mkdir(parents=True)
    ann.mkdir(parents=True)
    for t in range(3):
        Image.fromarray(frames[t]).save(jpg / f"{t:05d}.jpg")
        png = Image.fromarray(labels[t].astype(np.uint8))
        png.putpalette(ytvos.davis_palette().reshape(-1).tolist())
        png.save(ann / f"{t:05d}.png")
    texts = tmp_path / "davis_text_annotations"
    texts.mkdir()
    for set_name, file_name in ytvos.DAVIS_SETS.items():
        (texts / file_name).write_text(f'bike 1 "a bike {set_name}"\nbike 2 "a man {set_name}"\n')
    (texts / "Davis17_annot2.txt").write_bytes('bike 1 "a caf\xe9 bike"\nbike 2 "a man"\n'.encode("latin-1"))
    video = ytvos.read_ref_davis(tmp_path)["bike"]
    assert len(video.expressions) == 8 and video.object_ids == [1, 2]
    sets = [video.expression_sets[e] for e, _, o in video.expressions if o == 1]
    assert sets == ["annot1_first", "annot1_full", "annot2_first", "annot2_full"]
    assert "a café bike" in video.texts(1)
    assert np.array_equal(video.load_labels(), labels)
    (texts / "Davis17_annot1.txt").write_text("bike one a bike\n")
    with pytest.raises(DatasetFormatError, match="Davis17_annot1.txt:1"):
        ytvos.read_ref_davis(tmp_path)


# ----------------------------------------------------------------------------- loader
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), 3, seed=1, num_frames=8, size=(64, 80))


def test_synthetic_dataset_roundtrip(synth_root):
    ds = ytvos.read_dataset(synth_root)
    clip = generate_clip(1_000_000, num_frames=8, size=(64, 80))
    video = ds[clip.name]
    assert np.array_equal(video.load_labels(), clip.labels)
    assert {o: video.texts(o) for o in video.object_ids} == {k: o["expressions"] for k, o in clip.objects.items()}


def test_swap_left_right():
    assert swap_left_right("Left of the LEFT box, right side, leftmost, bright") == \
        "Right of the RIGHT box, left side, rightmost, bright"


def test_sampling_within_three_of_anchor():
    rng = np.random.default_rng(0)
    for length in (1, 2, 5, 30):
        for _ in range(50):
            a, f, b = sample_frame_indices(rng, length, 3)
            assert 0 <= a <= f <= b < length and f - a <= 3 and b - f <= 3
            if 3 <= f <= length - 4:
                assert a < f < b
    idx = sample_frame_indices(rng, 30, 5)
    assert idx == sorted(idx) and len(idx) == 5 and idx[-1] - idx[0] <= 12


def test_unaugmented_items_match_labels(synth_root):
    ds = RefClipDataset(synth_root, augment=False)
    assert len(ds) == sum(len(v.expressions) for v in ds.videos.values())
    for i in range(0, len(ds), 3):
        item = ds[i]
        video = ds.videos[item["video"]]
        assert item["masks"].dtype.is_floating_point is False and str(item["masks"].dtype) == "torch.bool"
        assert item["frames"].shape == (3, 64, 80, 3) and str(item["frames"].dtype) == "torch.uint8"
        labels = video.load_labels(item["frame_indices"])
        assert np.array_equal(item["masks"].numpy(), labels == item["obj_id"])
        assert np.array_equal(item["frames"].numpy(), video.load_frames(item["frame_indices"]))
        assert item["text"] in video.texts(item["obj_id"])


def test_flip_swaps_text_and_masks(synth_root, monkeypatch):
    plain = RefClipDataset(synth_root, augment=False)
    flipped = RefClipDataset(synth_root, augment=True, min_crop=1.0, flip_prob=1.0)
    # No colour jitter and a full-frame crop, so the flip can be compared pixel for pixel.
    monkeypatch.setattr(loader, "colour_jitter", lambda frame, rng: frame)
    swapped = 0
    for i in range(len(plain)):
        a, b = plain[i], flipped[i]
        assert a["frame_indices"] == b["frame_indices"] and b["flipped"]
        assert np.array_equal(b["masks"].numpy(), a["masks"].numpy()[:, :, ::-1])
        assert np.array_equal(b["frames"].numpy(), a["frames"].numpy()[:, :, ::-1])
        assert b["text"] == swap_left_right(a["text"])
        swapped += b["text"] != a["text"]
    assert swapped > 0  # some synthetic expressions say left or right


def test_augmented_items_deterministic_and_collate(synth_root):
    ds = RefClipDataset(synth_root, augment=True, size=48, seed=3)
    a, b = ds[1], ds[1]
    assert np.array_equal(a["frames"], b["frames"]) and a["text"] == b["text"]
    assert a["frames"].shape == (3, 48, 48, 3) and a["masks"].shape == (3, 48, 48)
    for i in range(len(ds)):
        item = ds[i]
        labels = ds.videos[item["video"]].load_labels(item["frame_indices"]) == item["obj_id"]
        if labels.any():  # the crop keeps the target in view
            assert item["masks"].any()
    ds.set_epoch(1)
    changed = any(not np.array_equal(ds[i]["frames"], RefClipDataset(synth_root, size=48, seed=3)[i]["frames"])
                  for i in range(4))
    assert changed
    batch = collate([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 3, 48, 48, 3) and batch["masks"].dtype.__str__() == "torch.bool"
    assert batch["obj_id"].shape == (2,) and len(batch["text"]) == 2
    with pytest.raises(ValueError, match="size"):
        native = RefClipDataset(synth_root, augment=False)
        collate([native[0], {**native[0], "frames": native[0]["frames"][:, :10]}])


def test_items_with_several_objects_of_one_clip(synth_root):
    plain = RefClipDataset(synth_root, augment=False)
    grouped = RefClipDataset(synth_root, augment=False, objects_per_clip=3)
    seen_groups = 0
    for i in range(len(grouped)):
        one, item = plain[i], grouped[i]
        video = grouped.videos[item["video"]]
        ids = item["obj_id"]
        # The item's own expression comes first, then distinct other objects of the same video.
        assert ids[0] == one["obj_id"] and item["text"][0] == one["text"]
        assert len(set(ids)) == len(ids) == min(3, len(video.object_ids))
        labels = video.load_labels(item["frame_indices"])
        assert item["masks"].shape == (len(ids), 3, 64, 80)
        for row, obj in enumerate(ids):
            assert np.array_equal(item["masks"][row].numpy(), labels == obj)
            assert item["text"][row] in video.texts(obj)
        seen_groups += len(ids) > 1
    assert seen_groups == len(grouped)
    # Augmented: one flip for all rows, and the crop keeps every object of the item in view.
    augmented = RefClipDataset(synth_root, augment=True, size=48, seed=2, objects_per_clip=4)
    single = RefClipDataset(synth_root, augment=True, size=48, seed=2)[2]
    batch = collate([augmented[0], augmented[5], single])
    rows = [len(augmented[0]["obj_id"]), len(augmented[5]["obj_id"]), 1]
    assert batch["frames"].shape[0] == 3
    assert batch["clip"].tolist() == [c for c, n in enumerate(rows) for _ in range(n)]
    assert batch["masks"].shape[0] == len(batch["text"]) == len(batch["obj_id"]) == sum(rows)
    for i in range(len(augmented)):
        item = augmented[i]
        labels = augmented.videos[item["video"]].load_labels(item["frame_indices"])
        for row, obj in enumerate(item["obj_id"]):
            if (labels == obj).any():
                assert item["masks"][row].any()
    with pytest.raises(ValueError, match="objects_per_clip"):
        RefClipDataset(synth_root, objects_per_clip=0)


def test_streamed_synthetic_items_with_several_objects():
    from src_model.data import synthetic_stream

    ds = synthetic_stream.SyntheticClipDataset(num_frames=3, clip_frames=6, size=64, seed=4, objects_per_clip=5)
    for i in range(4):
        item = ds[i]
        clip = generate_clip(synthetic_stream._STREAM_OFFSET + 4 * 10_000_000 + i, num_frames=6, size=(64, 64))
        ids = item["obj_id"]
        assert sorted(ids) == sorted(clip.objects)  # five asked for: every object of the clip, once
        assert item["masks"].shape == (len(ids), 3, 64, 64) and len(item["text"]) == len(ids)
        for row, obj in enumerate(ids):
            assert np.array_equal(item["masks"][row].numpy(), clip.labels[item["frame_indices"]] == obj)
            assert item["text"][row] in clip.objects[obj]["expressions"]
