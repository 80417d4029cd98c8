"""VideoSession.use_model: a session goes on with other weights in place, keeping its labels,
objects, keyframes and undo steps; what it then computes is what a session saved and loaded on
those weights computes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from src_model.errors import PromptError
from src_model.video.session import VideoSession

T, H, W = 10, 64, 96


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(1).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def other_model(text_encoder):
    from src_model.weights import load_refsam

    torch.manual_seed(5)
    return load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")


def rect(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def annotated(model, video, cache_dir):
    """Two text objects, a box object and a correction, each propagated."""
    s = VideoSession(model, video, cache_dir=cache_dir)
    a = s.add_object(text="the red circle")
    s.add_object(text="a small square on the left")
    s.add_object(frame=4, box=(20, 10, 60, 40))
    list(s.propagate())
    s.set_mask(a, 6, rect(10, 50, 20, 70))
    list(s.propagate(start=6))
    return s


def test_after_a_model_switch_runs_match_a_session_loaded_on_that_model(tiny_model, other_model, video, tmp_path):
    with annotated(tiny_model, video, tmp_path / "features") as s:
        path = s.save(tmp_path / "clip.refsam")
        labels, objects, keyframes = s.labels.copy(), s.objects, s.keyframes
        s.use_model(other_model)
        assert s.model is other_model and s.cache.model is other_model
        assert np.array_equal(s.labels, labels) and s.objects == objects and s.keyframes == keyframes
        with VideoSession.load(other_model, path, video=video, cache_dir=tmp_path / "features") as loaded:
            for session in (s, loaded):
                session.set_mask(3, 8, rect(0, 30, 0, 30))
                list(session.propagate(start=8))
                list(session.propagate(start=6, direction="backward"))
            assert np.array_equal(s.labels, loaded.labels)
            assert not np.array_equal(s.labels, labels)  # the new weights did the work
        assert s.cache.frames_encoded == T  # every frame encoded again, by the new weights, once


def test_undo_goes_on_across_a_model_switch(tiny_model, other_model, video):
    with annotated(tiny_model, video, None) as s:
        assert s.undo() == "propagate" and s.undo() == "set_mask"  # back to after the first run
        after_first_run = s.labels.copy()
        s.set_mask(1, 6, rect(10, 50, 20, 70))
        list(s.propagate(start=6))
        corrected = s.labels.copy()
        s.remove_object(2)
        s.use_model(other_model)
        assert 2 not in s.objects
        assert s.undo() == "remove_object"
        assert np.array_equal(s.labels, corrected) and s.objects[2]["text"] == "a small square on the left"
        assert s.undo() == "propagate" and s.undo() == "set_mask"
        assert np.array_equal(s.labels, after_first_run) and s.keyframes[1] == []
        # An object brought back by undo decodes with the new model's encoding of its expression,
        # and no frame's chain state is taken for one the new weights made.
        assert torch.equal(s._objects[2].text_prompt.words,
                           other_model.encode_text(["a small square on the left"]).words)
        assert not any(o.known.any() for o in s._objects.values())
        list(s.propagate(obj_ids=[2]))
        assert s._objects[2].known.all()


def test_a_model_that_cannot_take_the_expressions_changes_nothing(tiny_model, video, text_encoder):
    from src_model.weights import load_refsam

    torch.manual_seed(1)
    no_text = load_refsam(None, preset="tiny", text_encoder=False, device="cpu")
    with annotated(tiny_model, video, None) as s:
        labels, cache, encoded = s.labels.copy(), s.cache, s.cache.frames_encoded
        track = s._objects[1].track.copy()
        with pytest.raises(PromptError, match="no text encoder"):
            s.use_model(no_text)
        assert s.model is tiny_model and s.cache is cache and np.array_equal(s._objects[1].track, track)
        assert np.array_equal(s.labels, labels)
        list(s.propagate(start=6))  # still works, on the model it had
        assert s.cache.frames_encoded == encoded  # from the features it already had


def test_a_model_with_another_token_size_takes_the_session(tiny_model, video, text_encoder):
    from src_model.config import preset_config
    from src_model.modeling.refsam import RefSAM

    config = preset_config("tiny", text_dim=text_encoder.dim)
    config = dataclasses.replace(config, sam=dataclasses.replace(config.sam, prompt_embed_dim=64),
                                 itm_mlp_dim=256)
    torch.manual_seed(2)
    narrow = RefSAM(config, text_encoder).eval()
    with annotated(tiny_model, video, None) as s:
        s.undo()
        s.use_model(narrow)
        assert all(o.track.shape == (T, 64) for o in s._objects.values())
        list(s.propagate(start=6))
        assert s.undo() == "propagate"
        assert s.undo() == "set_mask"  # reverting chain state of another size is no problem
        s.set_mask(1, 6, rect(10, 50, 20, 70))
        list(s.propagate(start=6))
        assert s.keyframes[1] == [6] and np.array_equal(s.labels[6] == 1, rect(10, 50, 20, 70))


def test_a_prediction_that_meets_a_model_switch_decodes_the_new_models_features(tiny_model, other_model, video):
    """predict_mask encodes its frame outside the session lock; a use_model (from another thread)
    while it does must not leave the old weights' features to be decoded by the new ones."""
    with VideoSession(other_model, video) as fresh:
        expected = fresh.predict_mask(3, box=(20, 10, 60, 40))
    with VideoSession(tiny_model, video) as s:
        old_cache = s.cache
        encode = old_cache.get

        def get_then_switch(frame):
            features = encode(frame)
            s.use_model(other_model)  # what the other thread does while this frame was encoded
            return features

        old_cache.get = get_then_switch
        assert np.array_equal(s.predict_mask(3, box=(20, 10, 60, 40)), expected)
        assert s.model is other_model
