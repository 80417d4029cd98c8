"""RefSAM model: exactness against segment_anything, freezing, padding, save/load, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from src_model.config import SAM_PRESETS
from src_model.errors import CheckpointError, PromptError, TextInputError
from src_model.sam import build_sam, import_segment_anything
from src_model.weights import ALL_PARTS, REFSAM_PARTS, load_refsam, save_refsam


def _random_frame(seed, shape=(120, 176, 3)):
    rng = np.random.default_rng(seed)
    # Smooth content plus noise: exercises resizing like a real image would.
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = (np.stack([x * 1.3, y * 2.1, (x + y) * 0.7], -1) % 256).astype(np.float32)
    return np.clip(base + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


def _predictor_and_model(tmp_path, preset, text_encoder):
    sa = import_segment_anything()
    torch.manual_seed(11)
    sam = build_sam(SAM_PRESETS[preset])
    path = tmp_path / f"sam_{preset}.pth"
    torch.save(sam.state_dict(), path)
    reference = build_sam(SAM_PRESETS[preset])
    reference.load_state_dict(torch.load(path, weights_only=True))
    model = load_refsam(None, preset=preset, sam_checkpoint=path, text_encoder=text_encoder, device="cpu")
    return sa.SamPredictor(reference), model


def _check_sam_exactness(predictor, model, frame):
    predictor.set_image(frame)
    reference = predictor.get_image_embedding()
    ours = model.image_embedding(frame[None])
    assert ours.shape == reference.shape
    rel = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert rel < 1e-4, rel

    box = np.array([20, 15, 110, 90])
    _, _, low_res = predictor.predict(box=box, multimask_output=False, return_logits=True)
    with torch.no_grad():
        feats = model.encode_frames(frame[None])
        out = model.decode(feats, boxes=model.transform_coords(torch.tensor(box[None]), frame.shape[:2]))
    ref_logits = torch.from_numpy(low_res)
    ours_logits = out.low_res_logits[:, 0]
    rel = ((ours_logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
    assert rel < 1e-4, rel


def test_image_embedding_and_box_decode_equal_sam_predictor(tmp_path, text_encoder):
    predictor, model = _predictor_and_model(tmp_path, "tiny", False)
    _check_sam_exactness(predictor, model, _random_frame(0))
    # Already at the encoder size: no resize path.
    _check_sam_exactness(predictor, model, _random_frame(1, (256, 200, 3)))


@pytest.mark.slow
def test_vit_b_embedding_equals_sam_predictor(tmp_path):
    predictor, model = _predictor_and_model(tmp_path, "vit_b", False)
    _check_sam_exactness(predictor, model, _random_frame(2, (300, 400, 3)))


def test_trained_adapters_change_the_embedding(tiny_model):
    frame = _random_frame(3)
    before = tiny_model.image_embedding(frame[None])
    adapter = tiny_model.adapters.adapters[str(tiny_model.config.adapted_blocks[0])].attn_adapter
    original = adapter.up.weight.detach().clone()
    try:
        with torch.no_grad():
            adapter.up.weight.normal_(0, 0.05)
        after = tiny_model.image_embedding(frame[None])
    finally:
        with torch.no_grad():
            adapter.up.weight.copy_(original)
    assert not torch.allclose(before, after)


def test_backward_reaches_only_trainable_parameters(tiny_model):
    model = tiny_model
    frames = np.stack([_random_frame(4), _random_frame(5)])
    model.zero_grad(set_to_none=True)
    feats = model.encode_frames(frames)
    text = model.encode_text(["the red circle", "the small blue square on the left"])
    out0 = model.decode(feats.select([0]), text)
    out1 = model.decode(feats.select([1]), text, track=out0.track, mask_prompt=out0.low_res_logits)
    (out0.low_res_logits.mean() + out1.low_res_logits.mean() + out1.iou.mean()).backward()
    trainable = {"adapters", "text_mlp", "hda", "itm", "mask_decoder"}
    for part, module in model.part_modules().items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if part in trainable:
            assert grads and any(g.abs().sum() > 0 for g in grads), part
            assert all(p.requires_grad for p in module.parameters())
        else:
            assert not grads, f"{part} received gradients"
            assert not any(p.requires_grad for p in module.parameters())
    # The track token carries gradients to the first frame's decode.
    assert out1.track.requires_grad
    model.zero_grad(set_to_none=True)


def test_expression_unchanged_when_batched_with_longer_one(tiny_model):
    model = tiny_model
    feats = model.encode_frames(_random_frame(6)[None])
    short = "the red circle"
    long = "the large crimson disc moving slowly towards the upper right corner of the frame"
    with torch.no_grad():
        alone = model.encode_text([short])
        batched = model.encode_text([short, long])
        assert batched.mask.shape[1] > alone.mask.shape[1]
        out_alone = model.decode(feats, alone)
        out_batched = model.decode(feats, batched)
        track = out_alone.track
        step_alone = model.decode(feats, alone, track=track)
        step_batched = model.decode(feats, batched, track=torch.cat([track, out_batched.track[1:]]))
    torch.testing.assert_close(out_batched.low_res_logits[:1], out_alone.low_res_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_batched.track[:1], out_alone.track, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step_batched.low_res_logits[:1], step_alone.low_res_logits, rtol=1e-5, atol=1e-5)


def test_save_load_reproduces_outputs_bit_for_bit(tmp_path, text_encoder):
    torch.manual_seed(7)
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    with torch.no_grad():  # make the adapters non-trivial so they are really saved
        for p in model.adapters.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_refsam(model, tmp_path / "m.safetensors", parts=ALL_PARTS)
    again = load_refsam(path, text_encoder=text_encoder, device="cpu")
    frame = _random_frame(8)[None]
    with torch.no_grad():
        a, b = model.encode_frames(frame), again.encode_frames(frame)
        ta, tb = model.encode_text(["the green star"]), again.encode_text(["the green star"])
        oa, ob = model.decode(a, ta), again.decode(b, tb)
    assert torch.equal(a.embedding, b.embedding) and torch.equal(a.hier, b.hier)
    assert torch.equal(oa.low_res_logits, ob.low_res_logits) and torch.equal(oa.track, ob.track)
    assert again.weights_id == model.weights_id


def test_partial_weights_on_top_of_sam_checkpoint(tmp_path, text_encoder):
    torch.manual_seed(9)
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    path = save_refsam(model, tmp_path / "heads.safetensors", parts=REFSAM_PARTS)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any(k.startswith(("sam.image_encoder", "text_encoder")) for k in keys)
    sam_path = tmp_path / "sam.pth"
    torch.save(model.sam.state_dict(), sam_path)
    again = load_refsam(path, sam_checkpoint=sam_path, text_encoder=text_encoder, device="cpu")
    assert again.heads_trained
    # Without the checkpoint the image encoder would be random: refused, not run.
    with pytest.raises(CheckpointError, match="only the RefSAM parts.*--sam-checkpoint"):
        load_refsam(path, text_encoder=text_encoder, device="cpu")
    assert torch.equal(again.itm.ffn[0].weight, model.itm.ffn[0].weight)


def test_mismatched_shapes_are_listed(tmp_path, text_encoder):
    from safetensors.torch import load_file, save_file
    import json
    from safetensors import safe_open

    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    path = save_refsam(model, tmp_path / "m.safetensors", parts=ALL_PARTS)
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    state = load_file(str(path))
    state["itm.ffn.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"itm\.ffn\.0\.weight: file \(3, 3\)"):
        load_refsam(tmp_path / "bad.safetensors", text_encoder=text_encoder, device="cpu")
    assert json.loads(meta["refsam"])["format_version"] == 1


def test_pickle_where_safetensors_expected(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="must be a .safetensors file"):
        load_refsam(path, text_encoder=False)


def test_truncated_safetensors(tmp_path, text_encoder):
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    path = save_refsam(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or not safetensors"):
        load_refsam(tmp_path / "cut.safetensors", text_encoder=text_encoder)


def test_bundled_default_missing_or_present():
    from src_model.weights import BUNDLED

    if BUNDLED["default"].is_file():
        model = load_refsam("default", device="cpu")
        assert model.heads_trained and model.config.preset == "tiny"
    else:
        with pytest.raises(CheckpointError, match="bundled model 'default' is not installed"):
            load_refsam("default")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_expression(tiny_model, text):
    with pytest.raises(TextInputError, match="is empty"):
        tiny_model.encode_text([text])


def test_overlong_expression_truncated_with_warning(tiny_model, caplog):
    with pytest.warns(UserWarning, match="truncated"):
        prompt = tiny_model.encode_text(["the red circle " * 200])
    assert prompt.mask.shape[1] == tiny_model.text_encoder.max_length
    # ours only: not also transformers' own "Token indices sequence length is longer" log line
    assert not [r for r in caplog.records if "sequence length" in r.getMessage()]
    # Exactly at the limit (CLS + words + SEP) is not too long: no warning, nothing cut.
    limit = tiny_model.text_encoder.max_length
    at_limit = "red " * (limit - 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens = tiny_model.text_encoder.tokenize([at_limit])["input_ids"]
    assert tokens.shape[1] == limit and tokens[0, -1].item() == tiny_model.text_encoder.tokenizer.sep_token_id


def test_unknown_text_encoder_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TextInputError, match="cannot load text encoder 'no-such-org/no-such-model'"):
        load_refsam(None, preset="tiny", text_encoder="no-such-org/no-such-model")


def test_text_on_plain_sam_weights_is_refused(tmp_path, text_encoder):
    sam = build_sam(SAM_PRESETS["tiny"])
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    model = load_refsam(None, preset="tiny", sam_checkpoint=tmp_path / "sam.pth", text_encoder=text_encoder)
    with pytest.raises(PromptError, match="text objects need trained RefSAM weights"):
        model.encode_text(["the red circle"])


def test_any_input_size(tiny_model):
    for shape in [(31, 257, 3), (300, 40, 3), (256, 256, 3)]:
        frame = _random_frame(10, shape)
        feats = tiny_model.encode_frames(frame[None])
        with torch.no_grad():
            out = tiny_model.decode(feats, tiny_model.encode_text(["the dog"]))
        logits = tiny_model.postprocess(out.low_res_logits, feats.input_size, feats.original_size)
        assert logits.shape == (1, *shape[:2])


def test_bad_frame_dtype(tiny_model):
    with pytest.raises(ValueError, match="expected uint8 RGB frames"):
        tiny_model.encode_frames(np.zeros((1, 10, 10, 3), np.float32))
