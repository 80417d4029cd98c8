"""Decoder and session fast paths of the re-propagation (issue 3) against the reference
computation: segment_anything's own attention and mask decoder, nn.MultiheadAttention, and
glibc's allocator behaviour with and without tuning.
"""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from src_model import accel
from src_model.sam import import_segment_anything
from src_model.weights import load_refsam

import_segment_anything()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(4)
    return load_refsam(None, preset="tiny", text_encoder=False, device="cpu")


@pytest.mark.parametrize("padded", [False, True])
def test_few_keys_attention_matches_sdpa(padded):
    """The image-to-token attention's CPU layout (scores as keys x queries) against
    scaled_dot_product_attention, with and without padded prompt tokens, values and gradients."""
    from src_model.modeling.decoder import few_keys_attention

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 256, 16, generator=gen, requires_grad=True)
    k = torch.randn(3, 4, 11, 16, generator=gen, requires_grad=True)
    v = torch.randn(3, 4, 11, 16, generator=gen, requires_grad=True)
    mask = torch.ones(3, 11, dtype=torch.bool)
    if padded:
        mask[0, 7:] = False
        mask[2, 3:] = False
    ours = few_keys_attention(q, k, v, mask if padded else None)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :] if padded else None)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if padded:  # padded keys get no gradient: they were never attended to
        assert grads[1][0, :, 7:].abs().max() == 0 and grads[2][2, :, 3:].abs().max() == 0


def test_decoder_fast_layout_matches_segment_anything(model):
    """predict_masks (contiguous tokens, few-keys attention, channels-last upscaling) against
    segment_anything's own MaskDecoder.predict_masks on the same inputs."""
    from src_model.modeling.decoder import predict_masks

    decoder = model.sam.mask_decoder
    gen = torch.Generator().manual_seed(1)
    c, side = decoder.transformer_dim, model.config.sam.embedding_size
    src = torch.randn(1, c, side, side, generator=gen)
    tokens = torch.randn(2, 3, c, generator=gen)
    with torch.no_grad():
        rows = src.flatten(2).transpose(1, 2).expand(2, -1, -1)
        ours, iou, _ = predict_masks(decoder, rows, (side, side), model.dense_pe(flat=True), tokens, None)
        # SAM repeats the image per prompt and adds the dense prompt itself: give it zeros.
        ref, ref_iou = decoder.predict_masks(src, model.dense_pe(), tokens, torch.zeros(2, c, side, side))
    torch.testing.assert_close(ours[:, 0], ref[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou[:, 0], ref_iou[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_mask", [False, True])
def test_first_layer_from_cached_projections(model, with_mask):
    """Decoding from first-layer projections kept for the conditioned rows (the dense prompt's
    share added through the folded 16-channel product) gives the decoder's result on rows + dense:
    the session's cached re-propagation path against the plain one, with and without a mask prompt."""
    from src_model.modeling.channels_last import mask_prompt_factors
    from src_model.modeling.decoder import add_dense_prompt, first_layer_inputs, predict_masks

    decoder, prompts = model.sam.mask_decoder, model.sam.prompt_encoder
    gen = torch.Generator().manual_seed(5)
    c, side = decoder.transformer_dim, model.config.sam.embedding_size
    rows = torch.randn(1, side * side, c, generator=gen)
    tokens = torch.randn(2, 4, c, generator=gen)
    token_mask = torch.tensor([[True] * 4, [True, True, False, True]])
    if with_mask:
        masks = torch.randn(2, 1, 4 * side, 4 * side, generator=gen) * 8
        hidden, weight, bias = mask_prompt_factors(prompts, masks)
        dense = F.linear(hidden, weight, bias)
    else:
        hidden, weight, bias = None, None, prompts.no_mask_embed.weight[0]
        dense = bias.view(1, 1, -1)
    pe = model.dense_pe(flat=True)
    with torch.no_grad():
        plain = predict_masks(decoder, (rows + dense).expand(2, -1, -1), (side, side), pe, tokens, token_mask)
        first = add_dense_prompt(decoder.transformer, first_layer_inputs(decoder.transformer, rows, pe),
                                 hidden, weight, bias)
        first = tuple(x.expand(2, -1, -1) for x in first)
        cached = predict_masks(decoder, (rows + dense).expand(2, -1, -1), (side, side), pe, tokens, token_mask,
                               first)
    for a, b in zip(cached, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.equal(plain[0][0], plain[0][1])  # the two rows really differ


def test_mask_embedding_rows_match_segment_anything():
    """The dense mask prompt as rows (its last 1x1 convolution a matmul on the rows) against
    segment_anything's PromptEncoder mask_downscaling, in float64: values and the gradients of
    the input and of every parameter."""
    from segment_anything.modeling import PromptEncoder

    from src_model.modeling.channels_last import mask_prompt_factors

    torch.manual_seed(2)
    encoder = PromptEncoder(embed_dim=128, image_embedding_size=(16, 12), input_image_size=(128, 96),
                            mask_in_chans=16).double()
    for p in encoder.mask_downscaling.parameters():  # away from the ones/zeros init of the norms
        p.data.normal_()
    masks = (torch.randn(3, 1, 64, 48, dtype=torch.float64) * 8).requires_grad_()
    ours = F.linear(*mask_prompt_factors(encoder, masks))
    ref = encoder._embed_masks(masks).flatten(2).transpose(1, 2)
    assert ours.shape == (3, 16 * 12, 128)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    weights = torch.randn(ref.shape, dtype=torch.float64)
    inputs = (masks, *encoder.mask_downscaling.parameters())
    grads = torch.autograd.grad((ours * weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weights).sum(), inputs)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_upscaled_logits_match_segment_anything():
    """Output upscaling (transposed convs as matmuls, the last one left per input pixel) and the
    hypernetwork dot product against segment_anything's MaskDecoder.output_upscaling on
    (B, C, h, w), float64, on a non-square grid, with the gradients of inputs and parameters."""
    from segment_anything.modeling import MaskDecoder

    from src_model.modeling.channels_last import upscaled_mask_logits

    torch.manual_seed(3)
    c, h, w = 128, 16, 8
    upscaling = MaskDecoder(transformer_dim=c, transformer=torch.nn.Identity()).output_upscaling.double()
    for p in upscaling.parameters():
        p.data.normal_(std=0.3)
    rows = torch.randn(2, h * w, c, dtype=torch.float64, requires_grad=True)
    hyper = torch.randn(2, c // 8, dtype=torch.float64, requires_grad=True)
    ours = upscaled_mask_logits(upscaling, rows, (h, w), hyper)
    upscaled = upscaling(rows.transpose(1, 2).reshape(2, c, h, w))
    ref = (hyper.unsqueeze(1) @ upscaled.flatten(2)).view(2, 1, 4 * h, 4 * w)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    weights = torch.randn(ref.shape, dtype=torch.float64)
    inputs = (rows, hyper, *upscaling.parameters())
    grads = torch.autograd.grad((ours * weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weights).sum(), inputs)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_channels_last_refuses_layers_it_cannot_run():
    """An overlapping transposed convolution has no patch-matmul form: a clear TypeError, not a wrong map."""
    from src_model.modeling.channels_last import run_layer

    with pytest.raises(TypeError, match="no channels-last form"):
        run_layer(torch.nn.ConvTranspose2d(4, 4, kernel_size=3, stride=2), torch.zeros(1, 8, 8, 4))


@pytest.mark.parametrize("num_queries", [1, 2, 5])
def test_folded_attention_matches_projected_keys(num_queries):
    """Few queries over many image keys with the key/value projections folded into the queries
    and outputs, against segment_anything's Attention (which projects every key): values and
    the gradients of every input and parameter."""
    from segment_anything.modeling.transformer import Attention as DecoderAttention

    from src_model.modeling.decoder import folded_attention, masked_attention

    torch.manual_seed(0)
    attn = DecoderAttention(128, 4, downsample_rate=2)
    for p in attn.parameters():  # non-zero biases, so dropping the key bias is really tested
        torch.nn.init.normal_(p, std=0.2)
    q = torch.randn(3, num_queries, 128, requires_grad=True)
    k = torch.randn(3, 300, 128, requires_grad=True)
    v = torch.randn(3, 300, 128, requires_grad=True)
    ours = folded_attention(attn, q, k, v)
    ref = attn(q, k, v)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    # masked_attention takes this path on its own for few queries and no key mask
    torch.testing.assert_close(masked_attention(attn, q, k, v), ref, rtol=1e-4, atol=1e-4)
    # Gradients in float64: the math is the same, float32 rounding through a sharp softmax is not.
    attn.double()
    inputs = tuple(x.detach().double().requires_grad_() for x in (q, k, v)) + tuple(attn.parameters())
    grads = torch.autograd.grad(folded_attention(attn, *inputs[:3]).square().sum(), inputs)
    ref_grads = torch.autograd.grad(attn(*inputs[:3]).square().sum(), inputs)
    for a, b in zip(grads, ref_grads):  # k_proj.bias included: zero in both (softmax shift invariance)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_single_token_tracking_attention_matches_multihead(model):
    """The ITM's self-attention over its one token, computed as out_proj(v_proj(x)), against
    nn.MultiheadAttention on a length-1 sequence."""
    itm = model.itm
    x = torch.randn(4, itm.norm1.normalized_shape[0])
    seq = x.unsqueeze(1)
    with torch.no_grad():
        ref = itm.attn(seq, seq, seq, need_weights=False)[0].squeeze(1)
        torch.testing.assert_close(itm.single_token_attention(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tuned_allocator_stops_page_faults_on_reused_buffers():
    """After tune_cpu_allocator() the 16 MiB activations of a repeated step reuse heap memory.
    Untuned glibc faults 300-700 times per step here (fresh mmaps, trimmed heap tops: 57,000 to
    139,000 over these 200 steps in five runs), which cost a quarter of a CPU first pass; tuned,
    0 in most runs, and at most one 16 MiB block (4,096 faults) when the heap has to grow once."""
    import resource

    assert accel.tune_cpu_allocator()
    x, layer = torch.randn(1, 1024, 128), torch.nn.Linear(128, 4096)

    def step() -> None:
        (layer(x).relu() * 2).sum()

    for _ in range(20):  # warm: the heap grows to the step's peak once
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        step()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 20_000


def test_first_layer_without_its_rows_is_refused(model):
    """Projections kept for some conditioned rows are meaningless without those rows: refused."""
    from src_model.modeling.features import FrameFeatures

    c, side = model.sam.mask_decoder.transformer_dim, model.config.sam.embedding_size
    feats = FrameFeatures(torch.zeros(1, c, side, side), torch.zeros(1, c, side, side), (256, 256), (256, 256))
    stale = tuple(torch.zeros(1, side * side, c // 2) for _ in range(3))
    with pytest.raises(ValueError, match="first_layer needs the text-conditioned rows"):
        model.decode(feats, first_layer=stale)
