"""SAM's two-way-transformer mask decoder, run with a key mask over its tokens.

RefSAM feeds the decoder a variable number of tokens (words of different expressions, an optional
track token, optional box/point prompts), padded to a common length in a batch. SAM's own forward
has no padding mask, so padded tokens would leak into every attention. These functions run the
same SAM modules (same parameters, same state dict) with a boolean key mask; with no padding
they compute exactly what segment_anything computes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .channels_last import upscaled_mask_logits


def few_keys_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / √d) v for many queries and few keys: the image-to-token attention.

    q (B, H, Nq, d), k/v (B, H, Nk, d), key_mask (B, Nk) bool -> (B, H, Nq, d). On the CPU a
    softmax along a short innermost axis (a dozen prompt tokens) is slow - it cost 4-5x the
    whole scaled_dot_product_attention call it sits in - so the scores are laid out (Nk, Nq)
    and normalised over Nk, with the long axis innermost. Same result to float rounding.
    """
    scores = torch.matmul(k, q.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, :, None], float("-inf"))
    return torch.matmul(scores.softmax(dim=-2).transpose(-1, -2), v)


def folded_attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM ``Attention`` forward for a few queries over many keys, without projecting the keys.

    q (B, Nq, C), k/v (B, Nk, C) -> (B, Nq, C). Per head h, scores q_h (W_k,h k)ᵀ equal
    (q_h W_k,h) kᵀ, and softmax(scores) (W_v,h v) equals (softmax(scores) v) W_v,hᵀ. For the
    decoder's last token-to-image attention (two tokens are read from it: IoU and mask token 0)
    that is ~2·H·Nq·C·Nk multiply-adds instead of 2·Nk·C·C/2 for the key and value projections
    of every image position: a twentieth of the work on the tiny preset. The value bias passes
    through weights that sum to one. Same result to float rounding; gradients are exact.
    """
    heads, b, nq = attn.num_heads, q.shape[0], q.shape[1]
    qh = attn.q_proj(q).view(b, nq, heads, -1).transpose(1, 2)  # (B, H, Nq, d)
    d = qh.shape[-1]
    wk = attn.k_proj.weight.view(heads, d, -1)  # (H, d, C)
    wv = attn.v_proj.weight.view(heads, d, -1)
    scale = d ** -0.5
    folded = (torch.matmul(qh, wk) * scale).reshape(b, heads * nq, -1)  # (B, H·Nq, C)
    # q_h·b_k,h is the same for every key (softmax ignores it); kept so that k_proj.bias stays
    # in the graph (a zero gradient, as in SAM's computation, rather than none).
    bias = (torch.matmul(qh, attn.k_proj.bias.view(heads, d, 1)) * scale).reshape(b, heads * nq, 1)
    scores = torch.baddbmm(bias, folded, k.transpose(1, 2))  # (B, H·Nq, Nk): one batched GEMM
    context = torch.bmm(scores.softmax(dim=-1), v).view(b, heads, nq, -1)  # (B, H, Nq, C)
    out = torch.matmul(context, wv.transpose(1, 2)) + attn.v_proj.bias.view(heads, 1, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, nq, heads * d))


def masked_attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """SAM ``Attention`` forward with an optional key mask.

    q (B, Nq, C), k/v (B, Nk, C), key_mask (B, Nk) bool (True = attend) -> (B, Nq, C).
    """
    if key_mask is None and 2 * attn.num_heads * q.shape[1] <= attn.internal_dim and k.shape[1] >= 8 * q.shape[1]:
        return folded_attention(attn, q, k, v)
    return attend(attn, attn.q_proj(q), attn.k_proj(k), attn.v_proj(v), key_mask)


def attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The rest of SAM ``Attention`` forward from projected q (B, Nq, D), k/v (B, Nk, D) -> (B, Nq, C)."""
    heads = attn.num_heads

    def split(x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, heads, c // heads).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    if q.device.type == "cpu" and 4 * k.shape[-2] <= q.shape[-2]:
        out = few_keys_attention(q, k, v, key_mask)
    else:
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, h, n, c = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


def _first_layer_projections(transformer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    layer = transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    return t2i.k_proj, t2i.v_proj, i2t.q_proj


def first_layer_inputs(transformer: nn.Module, rows: torch.Tensor, image_pe: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The image projections of the decoder's first layer, before the dense prompt is added.

    rows (B, HW, C) image rows, image_pe (1 or B, HW, C) -> (token-to-image k_proj(rows + pe),
    its v_proj(rows), image-to-token q_proj(rows + pe)), each (B, HW, D). The first layer sees
    the image before any token has changed it, so these depend on the frame and the expression
    only: a video session keeps them with the text-conditioned rows, and each decode then adds
    the dense prompt's share (``add_dense_prompt``) instead of projecting the image again.
    """
    k_proj, v_proj, q_proj = _first_layer_projections(transformer)
    with_pe = rows + image_pe
    return k_proj(with_pe), v_proj(rows), q_proj(with_pe)


def add_dense_prompt(transformer: nn.Module, inputs: tuple[torch.Tensor, ...], hidden: torch.Tensor | None,
                     weight: torch.Tensor | None, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``first_layer_inputs`` of rows + d from those of rows, for a dense prompt d = hidden Wᵀ + b.

    hidden (B, HW, r) with weight W (C, r) and bias b (C,): SAM's mask prompt, whose last layer
    is a 1x1 convolution from r = 16 channels; or hidden = weight = None and b the no-mask
    embedding. A projection P is linear, so P(x + d) = P(x) + (W_P W) hiddenᵀ + W_P b: a product
    over r channels instead of C for each of the three.
    """
    out = []
    for x, proj in zip(inputs, _first_layer_projections(transformer)):
        shift = F.linear(bias, proj.weight)  # W_P b (D,)
        out.append(x + (shift if hidden is None else F.linear(hidden, proj.weight @ weight, shift)))
    return tuple(out)


def two_way_transformer(transformer: nn.Module, image: torch.Tensor, image_pe: torch.Tensor,
                        tokens: torch.Tensor, token_mask: torch.Tensor | None,
                        keep: int | None = None, first: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM ``TwoWayTransformer`` forward with a token mask.

    image (B, HW, C) rows (or (B, C, H, W)); image_pe (1 or B, HW, C) or (1 or B, C, H, W);
    tokens (B, N, C); token_mask (B, N); keep: how many leading tokens to return (None: all);
    first: ``first_layer_inputs`` of this image (with its dense prompt), projected before
    -> tokens (B, keep, C), image (B, HW, C).
    """
    # Contiguous (B, HW, C) rows: adding a channels-first view to a contiguous tensor on every
    # layer walks memory with a 4 KiB stride, which cost more on the CPU than the projections.
    keys = (image if image.dim() == 3 else image.flatten(2).transpose(1, 2)).contiguous()
    key_pe = image_pe if image_pe.dim() == 3 else image_pe.flatten(2).transpose(1, 2).contiguous()
    queries, query_pe = tokens, tokens
    for index, layer in enumerate(transformer.layers):
        projected = first if index == 0 else None
        if layer.skip_first_layer_pe:
            queries = masked_attention(layer.self_attn, queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + masked_attention(layer.self_attn, q, q, queries, token_mask)
        queries = layer.norm1(queries)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        q = queries + query_pe
        if projected is None:
            attended = masked_attention(t2i, q, keys + key_pe, keys)
        else:
            attended = attend(t2i, t2i.q_proj(q), projected[0], projected[1])
        queries = layer.norm2(queries + attended)
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + query_pe
        if projected is None:
            attended = masked_attention(i2t, keys + key_pe, q, queries, token_mask)
        else:
            attended = attend(i2t, projected[2], i2t.k_proj(q), i2t.v_proj(queries), token_mask)
        keys = layer.norm4(keys + attended)
    # Only the first ``keep`` tokens are read after the last attention: with two (the IoU and
    # mask token 0) it runs as folded_attention, never projecting the image.
    queries, query_pe = queries[:, :keep], query_pe[:, :keep]
    q, k = queries + query_pe, keys + key_pe
    queries = transformer.norm_final_attn(
        queries + masked_attention(transformer.final_attn_token_to_image, q, k, keys)
    )
    return queries, keys


def predict_masks(mask_decoder: nn.Module, src: torch.Tensor, size: tuple[int, int], image_pe: torch.Tensor,
                  prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor | None, first: tuple | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one mask per item with SAM's ``MaskDecoder`` (multimask off: mask token 0).

    src (B, h·w, C) rows of the image features with dense prompts added; size (h, w);
    image_pe (1 or B, h·w, C); prompt_tokens (B, N, C); prompt_mask (B, N) bool or None;
    first: the transformer's ``first_layer_inputs`` of src, computed before (or None).
    Returns low-res mask logits (B, 1, 4h, 4w), IoU prediction (B, 1), mask token 0 output (B, C).
    """
    batch = src.shape[0]
    output_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
    tokens = torch.cat([output_tokens, prompt_tokens], dim=1)
    token_mask = None
    if prompt_mask is not None:
        always = torch.ones(batch, output_tokens.shape[1], dtype=torch.bool, device=src.device)
        token_mask = torch.cat([always, prompt_mask], dim=1)
    pos = image_pe.expand(batch, *image_pe.shape[1:])
    hs, image = two_way_transformer(mask_decoder.transformer, src, pos, tokens, token_mask, keep=2, first=first)
    mask_token = hs[:, 1, :]
    hyper = mask_decoder.output_hypernetworks_mlps[0](mask_token)
    logits = upscaled_mask_logits(mask_decoder.output_upscaling, image, size, hyper)
    iou = mask_decoder.iou_prediction_head(hs[:, 0, :])[:, :1]
    return logits, iou, mask_token
