"""Every fast path of issue 7 against the reference path (segment_anything's own modules).

Random SAM weights zero-initialise the relative-position tables and the absolute position
embedding, which would make the rel-pos tests vacuous: they are randomised here.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src_model import accel
from src_model.config import SAM_PRESETS
from src_model.modeling import fast_attention as fa
from src_model.modeling.resolution import resize_pos_embed
from src_model.sam import build_sam, import_segment_anything
from src_model.weights import load_refsam, read_refsam_file, save_refsam

import_segment_anything()
from segment_anything.modeling.image_encoder import Attention, get_rel_pos  # noqa: E402

CUDA = torch.cuda.is_available()


def _frame(seed: int, shape=(120, 176, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = (np.stack([x * 1.3, y * 2.1, (x + y) * 0.7], -1) % 256).astype(np.float32)
    return np.clip(base + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


def _attention(dim, heads, size, table=None, seed=0) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(dim, heads, use_rel_pos=True, input_size=(size, size)).eval()
    length = table or 2 * size - 1
    attn.rel_pos_h = torch.nn.Parameter(torch.randn(length, dim // heads) * 0.5)
    attn.rel_pos_w = torch.nn.Parameter(torch.randn(length, dim // heads) * 0.5)
    return attn


def _fast(attn: Attention, x: torch.Tensor, method: str) -> torch.Tensor:
    attn.__class__ = fa.FastAttention
    attn.method = method
    try:
        return attn(x)
    finally:
        attn.__class__ = Attention


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def _randomise_positions(model) -> None:
    """Non-zero rel-pos tables and absolute position embedding (SAM zero-initialises them)."""
    gen = torch.Generator().manual_seed(5)
    enc = model.sam.image_encoder
    with torch.no_grad():
        enc.pos_embed.copy_(torch.randn(enc.pos_embed.shape, generator=gen) * 0.5)
        for block in enc.blocks:
            for table in (block.attn.rel_pos_h, block.attn.rel_pos_w):
                table.copy_(torch.randn(table.shape, generator=gen) * 0.5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = load_refsam(None, preset="tiny", text_encoder=False, device="cpu")
    _randomise_positions(m)
    return m


# ------------------------------------------------------------------ attention kernels
@pytest.mark.parametrize("size", [5, 8, 13])
def test_rel_pos_table_equals_get_rel_pos(size):
    table = torch.randn(2 * 8 - 1, 16)  # trained for 8; 5 and 13 are resized linearly
    assert torch.equal(fa.rel_pos_table(size, table), get_rel_pos(size, size, table))


# (dim, heads, grid, batch, table length): windowed blocks get (windows, w, w, dim) inputs;
# the last case runs a global block on a grid its tables were not trained for (lower image size).
CASES = {
    "window": (128, 4, 8, 16, None),
    "window14": (96, 3, 14, 3, None),
    "global": (128, 4, 32, 2, None),
    "global_resized_table": (64, 2, 12, 1, 2 * 20 - 1),
}


@pytest.mark.parametrize("method", ["sdpa", "blocked"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("budget", ["default", "small"])
def test_fast_attention_fp32_matches_reference(case, method, budget, monkeypatch):
    dim, heads, grid, batch, table = CASES[case]
    if budget == "small":  # force row and query chunking with ragged remainders
        monkeypatch.setattr(fa, "CPU_BLOCK_BUDGET", grid * grid * 7 + 3)
        monkeypatch.setattr(fa, "SDPA_BIAS_BUDGET", (grid * grid) ** 2 * 3)
    attn = _attention(dim, heads, grid, table)
    x = torch.randn(batch, grid, grid, dim)
    with torch.no_grad():
        reference = attn(x)
        ours = _fast(attn, x, method)
    assert ours.shape == reference.shape
    assert _rel(ours, reference) < 1e-5


@pytest.mark.parametrize("method", ["sdpa", "blocked"])
def test_fast_attention_bf16_within_tolerance(method):
    attn = _attention(128, 4, 16)
    x = torch.randn(2, 16, 16, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = attn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = _fast(attn, x, method)
            reference_bf16 = attn(x)
    assert ours.dtype == torch.bfloat16
    # bf16 has an 8-bit mantissa: both bf16 paths are ~1e-2 from fp32 and from each other.
    assert _rel(ours, reference) < 5e-2
    assert _rel(ours, reference_bf16) < 5e-2
    assert _cosine(ours, reference) > 0.999


@pytest.mark.parametrize("method", ["sdpa", "blocked"])
def test_fast_attention_gradients_match(method, monkeypatch):
    """Adapters are trained through the encoder: the backward pass must agree too."""
    monkeypatch.setattr(fa, "CPU_BLOCK_BUDGET", 100 * 40)
    attn = _attention(64, 2, 10)
    x = torch.randn(2, 10, 10, 64, requires_grad=True)
    grads = []
    for use_fast in (False, True):
        out = _fast(attn, x, method) if use_fast else attn(x)
        attn.zero_grad()
        x.grad = None
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((x.grad.clone(), attn.rel_pos_h.grad.clone(), attn.qkv.weight.grad.clone()))
    for ref, ours in zip(*grads):
        assert _rel(ours, ref) < 1e-5


def test_unknown_method_is_refused():
    attn = _attention(32, 2, 4)
    with pytest.raises(ValueError, match="unknown attention method"):
        _fast(attn, torch.randn(1, 4, 4, 32), "flash-ish")


# ------------------------------------------------------------------ the model
def test_fast_attention_is_default_and_keeps_state_dict():
    fast = load_refsam(None, preset="tiny", text_encoder=False, device="cpu")
    plain = load_refsam(None, preset="tiny", text_encoder=False, device="cpu", fast=False)
    assert fast.fast_attention and not plain.fast_attention
    assert list(fast.state_dict()) == list(plain.state_dict())
    plain.enable_fast_attention()
    assert plain.fast_attention
    assert all(type(b.attn) is fa.FastAttention for b in plain.sam.image_encoder.blocks)


def test_image_embedding_same_with_and_without_fast_attention(model):
    frames = np.stack([_frame(0), _frame(1)])
    with torch.no_grad():
        model.enable_fast_attention(False)
        reference = model.image_embedding(frames)
        ref_features = model.encode_frames(frames)
        model.enable_fast_attention(True)
        ours = model.image_embedding(frames)
        features = model.encode_frames(frames)
    assert _rel(ours, reference) < 1e-5
    assert _rel(features.hier, ref_features.hier) < 1e-5


# ------------------------------------------------------------------ bf16
def test_bf16_encoder_on_cpu_within_tolerance(model):
    frames = np.stack([_frame(2), _frame(3)])
    with torch.no_grad():
        reference = model.encode_frames(frames)
        assert model.enable_bf16(True)
        try:
            ours = model.encode_frames(frames)
            embedding = model.image_embedding(frames)
        finally:
            model.enable_bf16(False)
    assert ours.embedding.dtype == torch.float32 and ours.hier.dtype == torch.float32
    assert _cosine(ours.embedding, reference.embedding) > 0.99
    assert _cosine(ours.hier, reference.hier) > 0.99
    assert _cosine(embedding, reference.embedding) > 0.99
    assert model.encoder_dtype is None


def test_bf16_auto_follows_the_cpu(model):
    try:
        assert model.enable_bf16("auto") == accel.cpu_has_bf16()
    finally:
        model.enable_bf16(False)
    assert accel.bf16_supported("meta") is False


# ------------------------------------------------------------------ compile
def test_compile_failure_falls_back_to_eager(model, monkeypatch):
    images = model.preprocess(_frame(4)[None])[0]
    with torch.no_grad():
        reference = model.run_encoder(images)[0]

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("backend exploded\nlong traceback")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    try:
        with pytest.warns(RuntimeWarning, match="backend exploded"):
            assert model.compile_encoder(warmup_batch=1) is False
        assert not model.speed_options()["compiled"]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once, then silently eager
            assert torch.equal(model.run_encoder(images)[0], reference)
    finally:
        model._compiled_encoder = None


def test_compile_unavailable_and_lazy_failure(model, monkeypatch):
    def no_compile(fn, **kwargs):
        raise RuntimeError("Python 3.99 is not supported")

    monkeypatch.setattr(torch, "compile", no_compile)
    try:
        with pytest.warns(RuntimeWarning, match="not supported"):
            assert model.compile_encoder() is False
    finally:
        model._compiled_encoder = None


def test_compiled_wrapper_keeps_compiled_path_on_bad_input():
    calls = []

    def eager(x):
        if x < 0:
            raise ValueError("bad input")
        return x

    def compiled(x):
        calls.append(x)
        if x < 0:
            raise ValueError("bad input")
        return x

    wrapper = accel.CompiledOrEager(eager, compiled)
    with pytest.raises(ValueError, match="bad input"):
        wrapper(-1)
    assert wrapper.active and wrapper(2) == 2 and calls == [-1, 2]


@pytest.mark.slow
def test_compile_encoder_really_compiles(model):
    """Inductor on CPU (needs a C++ compiler; about two minutes for the tiny preset)."""
    images = model.preprocess(_frame(5)[None])[0]
    with torch.no_grad():
        reference = model.run_encoder(images)[0]
        try:
            assert model.compile_encoder(warmup_batch=1)
            ours = model.run_encoder(images)[0]
        finally:
            model._compiled_encoder = None
    assert _rel(ours, reference) < 1e-4


# ------------------------------------------------------------------ lower encoder resolution
def test_set_image_size_native_is_a_no_op(model):
    frames = _frame(6)[None]
    with torch.no_grad():
        before = model.encode_frames(frames)
        config, weights_id = model.config, model.weights_id
        model.set_image_size(SAM_PRESETS["tiny"].image_size)
        after = model.encode_frames(frames)
    assert model.config == config and model.weights_id == weights_id
    assert torch.equal(after.embedding, before.embedding) and torch.equal(after.hier, before.hier)
    assert resize_pos_embed(model.sam.image_encoder.pos_embed, (32, 32)) is model.sam.image_encoder.pos_embed


def test_lower_image_size_gives_masks_of_the_right_shape(model, tmp_path):
    frame = _frame(7, (90, 150, 3))
    native_id = model.weights_id
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model.encode_frames(frame[None])
        model.set_image_size(128)
        try:
            assert model.config.sam.image_size == 128 and model.config.sam.embedding_size == 16
            assert model.weights_id != native_id  # feature caches must not mix resolutions
            feats = model.encode_frames(frame[None])
            assert feats.embedding.shape[-2:] == (16, 16) and feats.hier.shape[-2:] == (16, 16)
            assert feats.input_size == (77, 128)
            box = model.transform_coords(torch.tensor([[10.0, 10.0, 80.0, 60.0]]), frame.shape[:2])
            out = model.decode(feats, boxes=box, mask_prompt=model.mask_to_prompt(
                torch.ones(1, *frame.shape[:2], dtype=torch.bool), feats.input_size))
            assert out.low_res_logits.shape == (1, 1, 64, 64)
            masks = model.postprocess(out.low_res_logits, feats.input_size, feats.original_size)
            assert masks.shape == (1, 90, 150)
            # Saved weights keep the native geometry (they load into a native SAM).
            path = save_refsam(model, tmp_path / "lowres.safetensors")
            assert read_refsam_file(path)[0]["config"]["sam"]["image_size"] == 256
        finally:
            model.set_image_size(None)
        after = model.encode_frames(frame[None])
    assert model.weights_id == native_id
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(after.embedding, before.embedding)


def test_lower_image_size_equals_sam_built_at_that_size(model):
    """The on-the-fly geometry equals a segment_anything encoder built at 128 px whose position
    embedding is resized bicubically and whose global rel-pos tables are resized linearly."""
    small = build_sam(dataclasses.replace(SAM_PRESETS["tiny"], image_size=128))
    state = dict(model.sam.state_dict())
    state["image_encoder.pos_embed"] = resize_pos_embed(state["image_encoder.pos_embed"], (16, 16))
    for index in SAM_PRESETS["tiny"].encoder_global_attn_indexes:
        # Keep the native (63, C) tables: segment_anything's get_rel_pos resizes them itself.
        attn = small.image_encoder.blocks[index].attn
        attn.rel_pos_h = torch.nn.Parameter(state[f"image_encoder.blocks.{index}.attn.rel_pos_h"].clone())
        attn.rel_pos_w = torch.nn.Parameter(state[f"image_encoder.blocks.{index}.attn.rel_pos_w"].clone())
    small.load_state_dict(state)
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        reference = small.image_encoder(images)
        model.set_image_size(128)
        try:
            ours = model.run_encoder(images)[0]
        finally:
            model.set_image_size(None)
    assert _rel(ours, reference) < 1e-5


@pytest.mark.parametrize("size", [100, 16, 0, 256.5])
def test_bad_image_size_is_refused(model, size):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.set_image_size(size)
    assert model.config.sam.image_size == 256


def test_load_refsam_image_size_keyword():
    m = load_refsam(None, preset="tiny", text_encoder=False, device="cpu", image_size=128)
    assert m.config.sam.image_size == 128 and m.native_config.sam.image_size == 256
    assert m.sam.prompt_encoder.get_dense_pe().shape[-2:] == (16, 16)
    assert m.speed_options()["image_size"] == 128


# ------------------------------------------------------------------ preprocessing and transfers
@pytest.mark.parametrize("shape", [(120, 176, 3), (480, 640, 3), (256, 200, 3)])
def test_device_preprocess_within_one_grey_level(model, shape):
    frames = np.stack([_frame(8, shape), _frame(9, shape)])
    reference, size, original = model.preprocess(frames)
    model.enable_device_preprocess(True)
    try:
        ours, size2, original2 = model.preprocess(frames)
    finally:
        model.enable_device_preprocess(False)
    assert (size2, original2) == (size, original) and ours.shape == reference.shape
    grey = ((ours - reference) * model.sam.pixel_std).abs()
    assert grey.max().item() <= 1.0 + 1e-4  # not bit-identical with PIL, by design
    assert grey.mean().item() < 0.25


def test_to_device_moves_nested_batches():
    batch = {"frames": np.zeros((2, 4, 4, 3), np.uint8), "ids": [torch.arange(3), (torch.ones(2), "x")]}
    moved = accel.to_device(batch, "cpu")
    assert isinstance(moved["frames"], torch.Tensor) and moved["frames"].dtype == torch.uint8
    assert isinstance(moved["ids"], list) and isinstance(moved["ids"][1], tuple) and moved["ids"][1][1] == "x"


# ------------------------------------------------------------------ CUDA (run on a GPU machine)
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_fast_attention_and_bf16(model, monkeypatch):
    # fp32 for the exactness check: bf16 is load_refsam's default on CUDA (seen on an H100: the two
    # paths then differ by 9e-3), and TF32 convolutions would blur the comparison too.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    gpu = load_refsam(None, preset="tiny", text_encoder=False, device="cuda", fast=False, bf16=False)
    gpu.load_state_dict(model.state_dict())
    frames = np.stack([_frame(10), _frame(11)])
    with torch.no_grad():
        reference = gpu.encode_frames(frames)
        gpu.enable_fast_attention()
        ours = gpu.encode_frames(frames)
        assert _rel(ours.embedding, reference.embedding) < 1e-4
        assert gpu.enable_bf16("auto")
        bf16 = gpu.encode_frames(frames)
        gpu.enable_device_preprocess()
        on_device = gpu.encode_frames(frames)
    assert _cosine(bf16.embedding, reference.embedding) > 0.99
    assert _cosine(on_device.embedding, reference.embedding) > 0.99
    moved = accel.to_device(torch.ones(3), "cuda")
    assert moved.device.type == "cuda"
