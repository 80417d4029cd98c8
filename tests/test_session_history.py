"""The undo history survives save -> load: a restored session undoes what came before the save,
bit for bit, step by step, as the session that saved it does."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from src_model.video.session import VideoSession

T, H, W = 8, 48, 64


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(3).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def rect(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def edited(model, video):
    """A session with every kind of step: objects added and propagated, a correction and its
    re-propagation, a removal (its object is only in the history then)."""
    s = VideoSession(model, video)
    a = s.add_object(text="the red circle")
    b = s.add_object(frame=2, box=(10, 10, 40, 30))
    list(s.propagate())
    s.set_mask(a, 4, rect(5, 30, 10, 50))
    list(s.propagate(start=4))
    s.remove_object(b)
    return s


def same_state(x, y) -> None:
    assert np.array_equal(np.asarray(x.labels), np.asarray(y.labels))
    assert x.objects == y.objects and x.keyframes == y.keyframes and x._next_id == y._next_id


def test_a_loaded_session_undoes_every_step_of_the_saved_one(tiny_model, video, tmp_path):
    s = edited(tiny_model, video)
    path = s.save(tmp_path / "s.refsam")
    loaded = VideoSession.load(tiny_model, path, video=video)
    try:
        same_state(s, loaded)
        steps = 0
        while s.can_undo:
            assert loaded.can_undo
            assert loaded.undo() == s.undo()
            same_state(s, loaded)
            steps += 1
        assert steps == 6 and not loaded.can_undo and not loaded.objects  # 2 adds, 2 runs, a correction, a removal
    finally:
        s.close()
        loaded.close()


def test_an_undone_removal_then_propagates_as_in_the_saved_session(tiny_model, video, tmp_path):
    """The removed object comes back with its chain state: a run resuming from it matches."""
    s = edited(tiny_model, video)
    loaded = VideoSession.load(tiny_model, s.save(tmp_path / "s.refsam"), video=video)
    try:
        for session in (s, loaded):
            assert session.undo() == "remove_object"
            list(session.propagate(start=5, direction="forward"))  # resumes from the stored chain state
            session.set_mask(2, 6, rect(20, 40, 30, 60))
            list(session.propagate(start=6))
            assert session.undo() and session.undo()
        same_state(s, loaded)
        assert sorted(loaded.objects) == [1, 2] and (np.asarray(loaded.labels) == 2).any()
    finally:
        s.close()
        loaded.close()


def test_history_with_other_weights_keeps_labels_and_drops_the_chain_state(tiny_model, text_encoder, video,
                                                                            tmp_path):
    from src_model.weights import load_refsam

    s = edited(tiny_model, video)
    path = s.save(tmp_path / "s.refsam")
    torch.manual_seed(5)
    other = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    loaded = VideoSession.load(other, path, video=video)
    try:
        while s.can_undo:
            assert loaded.undo() == s.undo()
            same_state(s, loaded)
        edits_states = [state for edit in loaded._history._edits for state in edit.states.values()]
        assert not any(known for _, _, known, _ in edits_states)
    finally:
        s.close()
        loaded.close()


def test_a_file_without_history_restores_with_nothing_to_undo(tiny_model, video, tmp_path):
    s = edited(tiny_model, video)
    path = s.save(tmp_path / "s.refsam")
    with zipfile.ZipFile(path) as whole, zipfile.ZipFile(tmp_path / "old.refsam", "w") as old:
        names = whole.namelist()
        assert "history/history.json" in names
        for name in names:
            if not name.startswith("history/"):  # as files written before the history was saved
                old.writestr(name, whole.read(name))
    loaded = VideoSession.load(tiny_model, tmp_path / "old.refsam", video=video)
    try:
        same_state(s, loaded)
        assert not loaded.can_undo and loaded.undo() is None
    finally:
        s.close()
        loaded.close()


def test_a_history_the_model_cannot_take_is_dropped_with_a_warning_the_session_is_restored(tiny_model,
                                                                                             text_encoder, video,
                                                                                             tmp_path):
    """A removed text object lives only in the history; plain SAM weights cannot encode its words:
    the session (a box object) is restored all the same, with nothing to undo, and says why."""
    from src_model.weights import load_refsam

    s = VideoSession(tiny_model, video)
    a = s.add_object(text="the red circle")
    s.add_object(frame=2, box=(10, 10, 40, 30))
    list(s.propagate())
    s.remove_object(a)
    path = s.save(tmp_path / "s.refsam")
    torch.manual_seed(1)
    plain = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    plain.heads_trained = False
    with pytest.warns(UserWarning, match="undo history was not restored .*trained RefSAM weights"):
        loaded = VideoSession.load(plain, path, video=video)
    try:
        assert np.array_equal(np.asarray(loaded.labels), np.asarray(s.labels)) and sorted(loaded.objects) == [2]
        assert not loaded.can_undo
    finally:
        s.close()
        loaded.close()
