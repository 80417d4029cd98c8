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
    heads = attn.num_heads
    if key_mask is None and 2 * heads * q.shape[1] <= attn.internal_dim and k.shape[1] >= 8 * q.shape[1]:
        return folded_attention(attn, q, k, v)

    def split(x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, heads, c // heads).transpose(1, 2)

    q, k, v = split(attn.q_proj(q)), split(attn.k_proj(k)), split(attn.v_proj(v))
    if q.device.type == "cpu" and 4 * k.shape[-2] <= q.shape[-2]:
        out = few_keys_attention(q, k, v, key_mask)
    else:
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, h, n, c = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


def two_way_transformer(transformer: nn.Module, image: torch.Tensor, image_pe: torch.Tensor,
                        tokens: torch.Tensor, token_mask: torch.Tensor | None,
                        keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM ``TwoWayTransformer`` forward with a token mask.

    image (B, C, H, W); image_pe (B, C, H, W) or already flattened (B, HW, C); tokens (B, N, C);
    token_mask (B, N); keep: how many leading tokens to return (None: all)
    -> tokens (B, keep, C), image (B, HW, C).
    """
    # Contiguous (B, HW, C) once: adding a channels-first view to a contiguous tensor on every
    # layer walks memory with a 4 KiB stride, which cost more on the CPU than the projections.
    keys = image.flatten(2).transpose(1, 2).contiguous()
    key_pe = image_pe if image_pe.dim() == 3 else image_pe.flatten(2).transpose(1, 2).contiguous()
    queries, query_pe = tokens, tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = masked_attention(layer.self_attn, queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + masked_attention(layer.self_attn, q, q, queries, token_mask)
        queries = layer.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = layer.norm2(queries + masked_attention(layer.cross_attn_token_to_image, q, k, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = layer.norm4(keys + masked_attention(layer.cross_attn_image_to_token, k, q, queries, token_mask))
    # Only the first ``keep`` tokens are read after the last attention: with two (the IoU and
    # mask token 0) it runs as folded_attention, never projecting the image.
    queries, query_pe = queries[:, :keep], query_pe[:, :keep]
    q, k = queries + query_pe, keys + key_pe
    queries = transformer.norm_final_attn(
        queries + masked_attention(transformer.final_attn_token_to_image, q, k, keys)
    )
    return queries, keys


def predict_masks(mask_decoder: nn.Module, src: torch.Tensor, image_pe: torch.Tensor,
                  prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one mask per item with SAM's ``MaskDecoder`` (multimask off: mask token 0).

    src (B, C, h, w) image features with dense prompts added; image_pe (1 or B, C, h, w), or
    (1 or B, hw, C) already flattened;
    prompt_tokens (B, N, C); prompt_mask (B, N) bool or None.
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
    hs, image = two_way_transformer(mask_decoder.transformer, src, pos, tokens, token_mask, keep=2)
    b, c, h, w = src.shape
    # (B, hw, C) seen as a channels-last (B, C, h, w): no transposing copy before the upscaling convs.
    upscaled = mask_decoder.output_upscaling(image.reshape(b, h, w, c).permute(0, 3, 1, 2))
    mask_token = hs[:, 1, :]
    hyper = mask_decoder.output_hypernetworks_mlps[0](mask_token)
    bu, cu, hu, wu = upscaled.shape
    logits = (upscaled.permute(0, 2, 3, 1) @ hyper.view(bu, 1, cu, 1)).reshape(bu, 1, hu, wu)
    iou = mask_decoder.iou_prediction_head(hs[:, 0, :])[:, :1]
    return logits, iou, mask_token
