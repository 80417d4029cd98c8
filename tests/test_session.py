"""VideoSession: propagation semantics, keyframes, undo, cancel, save/load, caches, bad input.

The tiny model has random weights, so masks are arbitrary but deterministic; the tests assert
relations (bit-identity, invariants, what the decoder was given), never particular masks.
A shared disk cache under a module temp folder keeps the image encoder to one pass per video.
"""
from __future__ import annotations

import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from src_model.errors import PromptError, TextInputError, VideoReadError
from src_model.video.labels import LabelStore
from src_model.video.propagation import resolve
from src_model.video.session import VideoSession

T, H, W = 10, 64, 96


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture
def make(tiny_model, video, cache_root):
    sessions = []

    def build(model=tiny_model, **kwargs):
        kwargs.setdefault("cache_dir", cache_root)
        session = VideoSession(model, video, **kwargs)
        sessions.append(session)
        return session

    yield build
    for s in sessions:
        s.close()


def rect(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def populate(session):
    """Two text objects and a box object, one whole-video run."""
    a = session.add_object(text="the red circle")
    b = session.add_object(text="a small square on the left")
    c = session.add_object(frame=4, box=(20, 10, 60, 40))
    for _ in session.propagate():
        pass
    return a, b, c


def check_keyframes(session):
    for obj, frames in session.keyframes.items():
        for t in frames:
            assert np.array_equal(session.labels[t] == obj, session.keyframe_mask(obj, t)), (obj, t)


# ------------------------------------------------------------------------------ semantics
def test_keyframes_stay_bit_identical_and_undo_restores_every_step(make):
    s = make()
    a, b, c = populate(s)
    assert s.labels.dtype == np.uint16 and s.labels.shape == (T, H, W)
    assert set(np.unique(s.labels)) <= {0, a, b, c} and len(np.unique(s.labels)) > 1
    snapshots = [s.labels.copy()]
    steps = [
        lambda: s.set_mask(a, 5, rect(10, 50, 20, 70)),
        lambda: list(s.propagate(start=5)),
        lambda: s.set_mask(c, 5, rect(30, 60, 50, 90)),  # overlaps a's keyframe: c takes those pixels
        lambda: s.set_mask(b, 8, np.zeros((H, W), bool)),  # b is absent on frame 8
        lambda: list(s.propagate(start=8, direction="backward")),
        lambda: list(s.propagate()),
        lambda: list(s.propagate(direction="forward")),
        lambda: list(s.propagate(direction="backward", obj_ids=[b, c])),
    ]
    for step in steps:
        step()
        check_keyframes(s)
        snapshots.append(s.labels.copy())
    assert s.keyframes == {a: [5], b: [8], c: [5]}
    assert not (s.keyframe_mask(a, 5) & s.keyframe_mask(c, 5)).any()
    assert not (s.labels[8] == b).any()
    for want in reversed(snapshots[:-1]):
        assert s.undo() is not None
        assert np.array_equal(s.labels, want)
        check_keyframes(s)
    assert s.keyframes == {a: [], b: [], c: []}
    assert s.undo() == "propagate" and not s.labels.any()
    while s.undo():
        pass
    assert s.objects == {} and s.undo() is None


def test_each_frame_is_encoded_once(make):
    s = make(cache_dir=None)
    a = s.add_object(text="the red circle")
    list(s.propagate())
    s.set_mask(a, T // 2, rect(10, 40, 10, 40))
    list(s.propagate(start=T // 2))
    b = s.add_object(text="the blue square")
    list(s.propagate(obj_ids=[b]))
    list(s.propagate(start=2, direction="forward"))
    assert s.cache.frames_encoded == T


def test_repropagation_stops_at_neighbouring_keyframes(make):
    s = make()
    a = s.add_object(text="the red circle")
    list(s.propagate())
    s.set_mask(a, 2, rect(10, 40, 10, 40))
    s.set_mask(a, 8, rect(20, 50, 30, 60))
    s.set_mask(a, 5, rect(15, 45, 20, 50))
    before = s.labels.copy()
    frames = [t for t, _ in s.propagate(start=5)]
    assert frames == [5, 6, 7, 4, 3]
    assert np.array_equal(s.labels[[0, 1, 2, 8, 9]], before[[0, 1, 2, 8, 9]])
    assert [t for t, _ in s.propagate(start=5, direction="forward")] == [5, 6, 7]
    assert [t for t, _ in s.propagate(start=5, direction="backward")] == [5, 4, 3]
    assert [t for t, _ in s.propagate(start=9, direction="forward")] == [9]
    check_keyframes(s)


def test_directions_of_whole_video_runs(make):
    s = make()
    c = s.add_object(frame=4, box=(20, 10, 60, 40))
    assert [t for t, _ in s.propagate()] == [4, 5, 6, 7, 8, 9, 3, 2, 1, 0]
    assert [t for t, _ in s.propagate(direction="forward")] == [4, 5, 6, 7, 8, 9]
    assert [t for t, _ in s.propagate(direction="backward")] == [4, 3, 2, 1, 0]
    a = s.add_object(text="the red circle")
    assert [t for t, _ in s.propagate(direction="backward", obj_ids=[a])] == list(range(T - 1, -1, -1))
    assert s.planned_frames() == len(list(s.propagate())) == T + 4  # frames 0..3 in both passes
    assert (s.labels == c).any()


def test_forward_run_resumes_bit_exactly(make):
    s = make()
    s.add_object(text="the red circle")
    s.add_object(text="a dog")
    list(s.propagate(direction="forward"))
    full = s.labels.copy()
    s.undo()
    run = s.propagate(direction="forward")
    for t, _ in run:
        if t == 3:
            s.cancel()
    assert np.array_equal(s.labels[:4], full[:4]) and not s.labels[4:].any()
    assert [t for t, _ in s.propagate(start=4, direction="forward")] == list(range(4, T))
    assert np.array_equal(s.labels, full)


def test_cancelled_run_leaves_each_frame_old_or_new(make):
    s = make()
    a, b, _ = populate(s)
    s.set_mask(a, 0, rect(5, 30, 5, 30))
    old = s.labels.copy()
    list(s.propagate(start=0, direction="forward"))
    new = s.labels.copy()
    s.undo()
    assert np.array_equal(s.labels, old)
    changed = [t for t in range(T) if not np.array_equal(old[t], new[t])]
    assert len(changed) >= 3

    # Cancel from another thread while the run is paused between two frames.
    seen, done = [], threading.Event()
    for t, frame in s.propagate(start=0, direction="forward"):
        seen.append(t)
        assert np.array_equal(frame, new[t])
        if len(seen) == 3:
            threading.Thread(target=lambda: (s.cancel(), done.set())).start()
            assert done.wait(5)
    assert seen == [0, 1, 2]
    for t in range(T):
        assert np.array_equal(s.labels[t], new[t] if t < 3 else old[t])
    s.undo()  # the partial run is one undo step
    assert np.array_equal(s.labels, old)

    # An edit while a run is paused cancels the run: it commits nothing more.
    run = s.propagate(start=0, direction="forward")
    assert [next(run)[0], next(run)[0]] == [0, 1]
    s.set_mask(b, 7, rect(0, 10, 0, 10))
    assert list(run) == []
    assert np.array_equal(s.labels[2:7], old[2:7])
    s.undo()
    s.undo()
    assert np.array_equal(s.labels, old)
    list(s.propagate(start=0, direction="forward"))
    assert np.array_equal(s.labels, new)


def test_save_load_then_propagate_gives_identical_labels(make, tiny_model, video, tmp_path):
    s = make()
    a, b, c = populate(s)
    s.set_mask(a, 6, rect(10, 50, 20, 70))
    path = s.save(tmp_path / "clip.refsam")
    loaded = VideoSession.load(tiny_model, path, video=video)
    try:
        assert np.array_equal(loaded.labels, s.labels)
        assert loaded.objects == s.objects and loaded.keyframes == s.keyframes
        assert loaded.settings == s.settings
        for session in (s, loaded):
            list(session.propagate(start=6))
            session.set_mask(c, 2, rect(0, 20, 0, 20))
            list(session.propagate(start=2, direction="forward"))
            list(session.propagate(start=3, direction="forward"))  # resumes from stored chain state
            session.add_object(text="something new")
            list(session.propagate(obj_ids=4))  # one id, as itself
        assert np.array_equal(loaded.labels, s.labels)
    finally:
        loaded.close()
    with pytest.raises(VideoReadError, match="shape"):
        VideoSession.load(tiny_model, path, video=video[:5])
    with pytest.raises(VideoReadError, match="pass video="):
        VideoSession.load(tiny_model, path)
    (tmp_path / "bad.refsam").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a napari-refsam session"):
        VideoSession.load(tiny_model, tmp_path / "bad.refsam", video=video)
    with zipfile.ZipFile(path) as whole, zipfile.ZipFile(tmp_path / "part.refsam", "w") as part:
        for name in whole.namelist():
            if name != "labels.npy":
                part.writestr(name, whole.read(name))
    with pytest.raises(ValueError, match=r"part.refsam is incomplete or damaged, .*no item named 'labels.npy'"):
        VideoSession.load(tiny_model, tmp_path / "part.refsam", video=video)


def test_labels_do_not_depend_on_the_cache_or_the_label_storage(make, tiny_model, video, tmp_path):
    def run(session):
        a, b, c = populate(session)
        session.set_mask(b, 3, rect(5, 25, 40, 80))
        list(session.propagate(start=3))
        return session.labels

    memory = np.array(run(make(cache_dir=None)))
    disk = make(cache_dir=tmp_path / "cache", labels_path=tmp_path / "labels.npy")
    on_disk = run(disk)
    assert isinstance(on_disk, np.memmap) and np.array_equal(on_disk, memory)
    assert disk.cache.frames_encoded == T
    disk.close()
    reopened = make(cache_dir=tmp_path / "cache", memmap_bytes=0)  # labels in a temporary file
    assert np.array_equal(run(reopened), memory) and reopened.cache.frames_encoded == 0
    temp = reopened._store.path
    assert not temp.exists()  # unlinked while open: a killed run leaves no file behind
    assert temp.parent.parent == tmp_path / "cache" and not list(temp.parent.glob("refsam-labels-*"))
    reopened._store.promote(np.uint32)  # widened through a new file, which loses its name too
    assert np.array_equal(reopened.labels, memory) and reopened.labels.dtype == np.uint32
    assert not list(temp.parent.glob("*labels-*"))
    reopened.close()
    with pytest.raises(FileExistsError):
        make(labels_path=tmp_path / "labels.npy")


def test_repropagation_reuses_text_conditioned_features_bit_exactly(make):
    """F̄ + HDA is kept per (expression, frame): a re-propagation skips HDA on every frame it
    revisits, and the labels are those of a session that recomputes it."""
    from src_model.video.conditioned import ConditionedCache

    def run(session):
        a, b, _ = populate(session)
        session.set_mask(a, 5, rect(15, 45, 20, 50))
        hits = session.conditioned.hits
        list(session.propagate(start=5))
        return session.labels.copy(), session.conditioned.hits - hits

    cached = make()
    labels, hits = run(cached)
    # Both text objects on every frame, the keyframe's τ re-initialisation too: all from the cache.
    assert hits == 2 * T and len(cached.conditioned) == 2 * T
    fresh = make()
    fresh.conditioned = ConditionedCache(0)  # keeps nothing: HDA recomputed on every decode
    fresh_labels, fresh_hits = run(fresh)
    assert fresh_hits == 0 and len(fresh.conditioned) == 0
    assert np.array_equal(labels, fresh_labels)
    # A budget with room for every frame's rows but few projections: the projections are made
    # again from the kept rows, with the same labels, and HDA is still skipped on every frame.
    rows = next(iter(cached.conditioned._entries.values()))[0]
    slimmed = make()
    slimmed.conditioned = ConditionedCache((2 * T + 2) * rows.numel() * rows.element_size())
    slim_labels, slim_hits = run(slimmed)
    assert slim_hits == 2 * T and np.array_equal(labels, slim_labels)
    assert sum(len(entry) == 1 for entry in slimmed.conditioned._entries.values()) >= T
    # The cache is bounded by bytes (LRU), and removing an object forgets its expression.
    small = ConditionedCache(3 * (48 + 16) * 4)  # three entries of a (4, 4, 3) and a (4, 4) float32 tensor
    for frame in range(5):
        small.put(("x", frame), (torch.zeros(4, 4, 3), torch.zeros(4, 4)))
    assert small.nbytes == 2 * 48 * 4 + (48 + 16) * 4  # the two older ones kept their rows only
    # Room is made by dropping the least recently used entries' projections before whole entries.
    slim = ConditionedCache(3 * 48 * 4 + 2 * 16 * 4)  # three rows, and projections for two of them
    for frame in range(3):
        slim.put(("x", frame), (torch.zeros(4, 4, 3), torch.zeros(4, 4)))
    assert len(slim) == 3 and [len(slim.get(("x", f))) for f in range(3)] == [1, 2, 2]
    # Frame 3 needs more room than all projections free: every older entry keeps its rows only,
    # then the least recently used one goes.
    slim.put(("x", 3), (torch.zeros(4, 4, 3), torch.zeros(4, 4)))
    assert slim.get(("x", 0)) is None and [len(slim.get(("x", f))) for f in (1, 2, 3)] == [1, 1, 2]
    assert slim.nbytes == 2 * 48 * 4 + (48 + 16) * 4
    assert len(small) == 3 and small.get(("x", 0)) is None and small.get(("x", 4)) is not None
    cached.remove_object(2)
    assert len(cached.conditioned) == T


def test_overlap_rule():
    old = np.array([[0, 1, 2, 3]], np.uint16)
    logits = {1: torch.tensor([[5.0, 1.0, 3.0, 9.0]]), 4: torch.tensor([[2.0, -1.0, 4.0, 9.5]])}
    new = resolve(old, [1, 4], logits, {}, 0.0)
    # 1 beats 4 on pixel 0; 1 alone above 0 on pixel 1; 2 and 3 were not decoded: they keep theirs.
    assert new.tolist() == [[1, 1, 2, 3]]
    new = resolve(old, [1, 2, 3, 4], logits, {}, 0.0)
    assert new.tolist() == [[1, 1, 4, 4]]
    assert resolve(old, [1, 2, 3, 4], logits, {}, 6.0).tolist() == [[0, 0, 0, 4]]
    locked = {2: np.array([[True, False, False, False]])}
    assert resolve(old, [1, 3, 4], logits, locked, 0.0).tolist() == [[2, 1, 0, 4]]
    # One object alone takes the free pixels above the threshold, and only those.
    assert resolve(old, [1], {1: logits[1]}, {}, 2.0).tolist() == [[1, 0, 2, 3]]
    # ... and a keyframe still overrides it (object 2's keyframe is all of object 2 on the frame).
    assert resolve(old, [3], {3: logits[4]}, locked, 0.0).tolist() == [[2, 1, 0, 3]]


# ------------------------------------------------------------------------------ what the decoder gets
@pytest.fixture
def spy(monkeypatch):
    def attach(model):
        calls = []
        original = model.decode

        def decode(features, **kwargs):
            out = original(features, **kwargs)
            calls.append({k: v for k, v in kwargs.items()} | {"out": out})
            return out

        monkeypatch.setattr(model, "decode", decode)
        return calls
    return attach


def test_keyframe_reinitialises_the_track_and_feeds_masks(make, tiny_model, spy):
    s = make()
    a = s.add_object(text="the red circle")
    calls = spy(tiny_model)
    list(s.propagate())
    assert calls[0]["track"] is None and calls[0]["mask_prompt"] is None  # cold start at frame 0
    assert all(c["mask_prompt"] is None and c["track"] is not None for c in calls[1:])
    assert torch.equal(calls[1]["track"], calls[0]["out"].track)
    mask = rect(10, 50, 20, 70)
    s.set_mask(a, 5, mask)
    calls.clear()
    list(s.propagate(start=5, direction="forward"))
    key = calls[0]
    assert key["track"] is None and key["text"] is not None
    assert torch.equal(key["mask_prompt"], tiny_model.mask_to_prompt(torch.from_numpy(mask)[None], (171, 256)))
    for prev, call, t in zip(calls, calls[1:], range(6, T)):
        assert torch.equal(call["track"], prev["out"].track)
        prompt = tiny_model.mask_to_prompt(torch.from_numpy(np.array(s.labels[t - 1] == a))[None], (171, 256))
        assert torch.equal(call["mask_prompt"], prompt)


def test_plain_sam_weights_box_objects_follow_the_previous_mask(make, text_encoder, spy):
    from src_model.weights import load_refsam

    torch.manual_seed(1)
    plain = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    plain.heads_trained = False
    s = make(model=plain, cache_dir=None)
    with pytest.raises(PromptError, match="trained RefSAM weights"):
        s.add_object(text="the red circle")
    assert s.objects == {}
    c = s.add_object(frame=0, box=(10, 10, 70, 50))
    d = s.add_object(frame=0, points=[(80, 40), (5, 5)], labels=[1, 0])
    calls = spy(plain)
    list(s.propagate(direction="forward"))
    assert all(call["text"] is None and call["track"] is None for call in calls)
    scale = torch.tensor([256 / W, 171 / H])
    assert torch.allclose(calls[0]["boxes"], torch.tensor([[10.0, 10, 70, 50]]) * scale.repeat(2))
    assert calls[1]["points"][1].tolist() == [[1, 0]]
    follow = [call for call in calls[2:] if call["boxes"] is not None and call["boxes"].shape[0] == 2]
    for call in follow[:1]:  # frame 1: both objects follow their frame-0 masks
        for row, obj in enumerate((c, d)):
            ys, xs = np.nonzero(s.labels[0] == obj)
            box = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32) * scale.repeat(2)
            assert torch.allclose(call["boxes"][row], box)


def test_a_box_with_only_negative_clicks_is_an_object(make, spy, tiny_model):
    """SAM's "this box, but not that": a red click inside a rectangle reaches the decoder with the box."""
    s = make(cache_dir=None)
    calls = spy(tiny_model)
    obj = s.add_object(frame=0, box=(10, 10, 70, 50), points=[(40, 30)], labels=[0])
    assert s.objects[obj]["prompt"]["labels"] == [0]
    list(s.propagate(direction="forward"))
    anchor = calls[0]
    assert anchor["boxes"] is not None and anchor["points"][1].tolist() == [[0]]


# ------------------------------------------------------------------------------ bad input
def test_bad_input_raises_and_leaves_the_session_usable(make):
    s = make()
    a, b, c = populate(s)
    labels, objects, keyframes = s.labels.copy(), s.objects, s.keyframes
    bad = [
        (PromptError, "outside", lambda: s.add_object(frame=0, box=(100, 10, 200, 40))),
        (PromptError, "inverted", lambda: s.add_object(frame=0, box=(50, 10, 20, 40))),
        (PromptError, "out of range", lambda: s.add_object(frame=T, box=(1, 1, 5, 5))),
        (PromptError, "need frame", lambda: s.add_object(box=(1, 1, 5, 5))),
        (PromptError, "outside", lambda: s.add_object(frame=1, points=[(500, 5)])),
        (PromptError, "0/1", lambda: s.add_object(frame=1, points=[(5, 5)], labels=[2])),
        (PromptError, "without a box need at least one positive", lambda: s.add_object(frame=1, points=[(5, 5)],
                                                                                     labels=[0])),
        (PromptError, "empty", lambda: s.add_object(frame=1, mask=np.zeros((H, W), bool))),
        (PromptError, "shape", lambda: s.add_object(frame=1, mask=np.ones((H, W + 1), bool))),
        (TextInputError, "empty", lambda: s.add_object(text="   ")),
        (TextInputError, "must be a string, not int", lambda: s.add_object(text=5)),
        (PromptError, "NaN", lambda: s.set_mask(a, 1, np.full((H, W), np.nan))),
        (IsADirectoryError, "give a file name", lambda: s.save(Path(tempfile.gettempdir()))),
        (PromptError, "shape", lambda: s.set_mask(a, 1, np.ones((H - 1, W), bool))),
        (PromptError, "unknown object", lambda: s.set_mask(99, 1, rect(0, 5, 0, 5))),
        (PromptError, "out of range", lambda: s.set_mask(a, -1, rect(0, 5, 0, 5))),
        (PromptError, "unknown object", lambda: s.remove_object(42)),
        (PromptError, "direction", lambda: s.propagate(direction="sideways")),
        (PromptError, "out of range", lambda: s.propagate(start=T)),
        (PromptError, "unknown object", lambda: s.propagate(obj_ids=[a, 7])),
    ]
    for error, message, call in bad:
        with pytest.raises(error, match=message):
            call()
        assert np.array_equal(s.labels, labels) and s.objects == objects and s.keyframes == keyframes
    s.set_mask(a, 1, rect(0, 5, 0, 5))
    assert len(list(s.propagate(start=1))) == T
    check_keyframes(s)


def test_a_session_runs_inside_and_outside_torch_inference_mode(make):
    """SAM 2's examples wrap the predictor in torch.inference_mode(): frames encoded there must
    still be cached (and later frames encoded) once the caller runs outside it, and the other way
    round, with the same labels as a session that never entered it."""
    plain = make(cache_dir=None)
    populate(plain)
    for inside_first in (True, False):
        s = make(cache_dir=None)
        s.add_object(text="the red circle")
        s.add_object(text="a small square on the left")
        c = s.add_object(frame=4, box=(20, 10, 60, 40))
        modes = [torch.inference_mode(), torch.inference_mode(False)][:: 1 if inside_first else -1]
        with modes[0]:
            list(s.propagate(start=4, direction="forward", obj_ids=[c]))  # frames 4.. only
        with modes[1]:
            list(s.propagate())  # frames 0-3 encoded now, in the other mode
        assert np.array_equal(s.labels, plain.labels), inside_first


def test_predict_mask_is_the_anchor_decode_and_changes_nothing(make):
    """predict_mask(frame, prompt) is what a prompt object anchored there gets on that frame, and it
    leaves labels, objects, keyframes and the undo history as they were."""
    s = make()
    a, b, c = populate(s)
    labels, objects, keyframes, depth = s.labels.copy(), s.objects, s.keyframes, len(s._history)
    box, points, signs = (20, 10, 60, 40), [(40, 20), (70, 50)], [1, 0]
    from_box = s.predict_mask(4, box=box)
    from_clicks = s.predict_mask(6, points=points, labels=signs)
    assert from_box.shape == (H, W) and from_box.dtype == bool
    assert np.array_equal(s.labels, labels) and s.objects == objects and s.keyframes == keyframes
    assert len(s._history) == depth
    alone = make()
    for frame, prompt, expected in ((4, {"box": box}, from_box),
                                    (6, {"points": points, "labels": signs}, from_clicks)):
        obj = alone.add_object(frame=frame, **prompt)
        list(alone.propagate(obj_ids=[obj]))
        assert np.array_equal(alone.labels[frame] == obj, expected), prompt
        alone.remove_object(obj)
    assert 0 < from_box.sum() < H * W  # a mask to compare, not an empty or a full frame


def test_predict_mask_refuses_bad_prompts_and_stays_usable(make):
    s = make()
    for message, call in (
        ("needs box= and/or points=", lambda: s.predict_mask(2)),
        ("out of range", lambda: s.predict_mask(T, box=(1, 1, 5, 5))),
        ("outside", lambda: s.predict_mask(1, box=(100, 10, 200, 40))),
        ("labels= go with points=", lambda: s.predict_mask(1, box=(1, 1, 5, 5), labels=[1])),
        ("without a box need at least one positive", lambda: s.predict_mask(1, points=[(5, 5)], labels=[0])),
    ):
        with pytest.raises(PromptError, match=message):
            call()
    assert s.predict_mask(1, box=(1, 1, 30, 30)).shape == (H, W)


def test_a_box_drawn_past_the_edge_is_clipped_to_the_frame(make):
    s = make()
    with pytest.warns(UserWarning, match=r"reaches past the 96x64 frame; clipped to \(0.0, 10.0, 96.0, 40.0\)"):
        obj = s.add_object(frame=0, box=(-5, 10, 200, 40))
    assert s.objects[obj]["prompt"]["box"] == [0.0, 10.0, 96.0, 40.0]


def test_remove_object_and_undo(make):
    s = make()
    a, b, c = populate(s)
    before = s.labels.copy()
    s.remove_object(b)
    assert b not in s.objects and not (s.labels == b).any()
    assert np.array_equal(np.where(before == b, 0, before), s.labels)
    assert s.undo() == "remove_object"
    assert b in s.objects and np.array_equal(s.labels, before)
    assert s.add_object(text="a new one") == 4  # ids are never reused


def test_edit_group_is_one_undo_step(make):
    """Edits inside edit_group (several objects' masks, a new object, a re-propagation) are undone
    by one undo(); an empty group leaves no step; edits after it are steps of their own."""
    s = make()
    a, b, c = populate(s)
    labels, keyframes, objects = s.labels.copy(), s.keyframes, s.objects
    depth = len(s._history)
    with s.edit_group("correction"):
        pass
    assert len(s._history) == depth  # nothing changed: no step
    with s.edit_group("correction"):
        s.set_mask(a, 3, rect(0, 20, 0, 20))
        s.set_mask(b, 3, rect(20, 40, 0, 20))
        new = s.add_object(frame=3, mask=rect(40, 60, 40, 60))
        for _ in s.propagate(start=3):
            pass
    assert len(s._history) == depth + 1 and s.keyframes[new] == [3] and 3 in s.keyframes[a]
    check_keyframes(s)
    s.set_mask(c, 5, rect(0, 8, 0, 8))  # after the group: its own step
    assert s.undo() == "set_mask" and s.undo() == "correction"
    assert np.array_equal(s.labels, labels) and s.keyframes == keyframes and s.objects == objects


def test_label_store_widens_to_uint32(tmp_path):
    for path in (None, tmp_path / "l.npy"):
        store = LabelStore((3, 4, 5), np.uint16, path)
        store.write(1, np.full((4, 5), 65535))
        store.promote(np.uint32)
        store.write(2, np.full((4, 5), 70000))
        assert store.array.dtype == np.uint32
        assert store.read(1).max() == 65535 and store.array[2].max() == 70000 and not store.read(0).any()
        store.close()


def test_undo_restores_frames_with_more_than_255_objects(make):
    """A frame holding id 300 (uint16 labels) is restored bit for bit by undo."""
    session = make()
    ids = []
    for i in range(300):  # one pixel each, on frame 0: no decoding needed
        mask = np.zeros((H, W), bool)
        mask[i // W, i % W] = True
        ids.append(session.add_object(frame=0, mask=mask))
    before = session.labels[0].copy()
    assert before.max() == ids[-1] >= 300 and before.dtype == np.uint16
    session.set_mask(ids[-1], 0, rect(30, 40, 30, 40))
    assert not np.array_equal(session.labels[0], before)
    session.undo()
    assert session.labels[0].dtype == before.dtype and np.array_equal(session.labels[0], before)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_undo_records_of_label_frames_are_exact(dtype):
    """pack_frame/unpack_frame: blob frames (stored as runs) and noise frames (zlib) come back
    bit for bit, with their dtype, and the runs form is much smaller than the frame."""
    from src_model.video.history import pack_frame, record_nbytes, unpack_frame

    rng = np.random.default_rng(0)
    blobs = np.zeros((240, 320), dtype)
    blobs[50:120, 40:90] = 3
    blobs[100:200, 200:300] = 70_000 if dtype == np.uint32 else 700
    blobs[0, 0] = blobs[-1, -1] = 1  # runs at both ends
    noise = rng.integers(0, 5, (240, 320)).astype(dtype)
    wide_noise = rng.integers(0, 301, (240, 320)).astype(dtype)  # ids past 255: no uint8 narrowing
    cases = ((blobs, "runs"), (noise, "zlib"), (wide_noise, "zlib"), (np.zeros((3, 4), dtype), "zlib"),
             (np.asfortranarray(blobs), "runs"))
    for frame, kind in cases:
        record = pack_frame(frame)
        back = unpack_frame(record)
        assert record[0] == kind and back.dtype == frame.dtype and np.array_equal(back, frame)
    assert pack_frame(noise)[2] == np.dtype(np.uint8).str and pack_frame(wide_noise)[2] == np.dtype(dtype).str
    assert record_nbytes(pack_frame(blobs)) < blobs.nbytes // 20
