"""A fast attention path for SAM's ViT blocks (issue 7).

segment_anything's ``Attention.forward`` materialises the whole attention matrix, adds the
decomposed relative-position terms into a new copy, and runs softmax into a third: three fresh
(B*heads, HW, HW) tensors per block (805 MB each for ViT-B's global blocks at 1024 px). Here the
same terms become an additive attention bias, and the attention runs one of two ways:

- CUDA (and other accelerators): ``torch.nn.functional.scaled_dot_product_attention`` with the
  bias as ``attn_mask`` (the memory-efficient kernel fuses scale, bias, softmax and the value
  product). The bias depends on q, so it is (B*heads, HW, HW) too, but it is built by one
  broadcast add and the attention matrix is never stored; rows are processed in chunks of at
  most ``SDPA_BIAS_BUDGET`` bias elements to bound peak memory for batched ViT-H.
- CPU: cache-sized blocks of (rows, queries): bias block, ``baddbmm`` (scale q kᵀ + bias),
  softmax, ``bmm``. Measured on the 2-core dev CPU, SDPA's CPU kernel with a dense bias is no
  faster than the reference (it streams the bias from memory like the reference streams its
  matrices), while blocks of ~``CPU_BLOCK_BUDGET`` elements that stay in L2/L3 are 2-3x faster.

Installing it swaps the class of each block's ``attn`` module to ``FastAttention``, a subclass
of segment_anything's ``Attention``: same parameters, same state-dict keys, reversible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sam import import_segment_anything

import_segment_anything()
from segment_anything.modeling.image_encoder import Attention  # noqa: E402

# Elements of one SDPA bias chunk: 2**28 is 1 GiB in fp32, 512 MiB in bf16. ViT-B's global block
# at 1024 px needs 12 * 4096**2 (about 2**27.6) per image.
SDPA_BIAS_BUDGET = 2**28
# Elements of one CPU score block (4 MiB in fp32): a 256-query slice of one head of a 64x64
# global block, or ~27 window-heads of a 14x14 windowed block; fits this CPU's L2+L3.
CPU_BLOCK_BUDGET = 2**20


def rel_pos_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(L, C) table -> (size, size, C) embeddings of q - k, as segment_anything's ``get_rel_pos``
    for equal query/key sizes (linear resize when L != 2*size-1). The indices are made on the
    table's device: ``get_rel_pos`` builds them on the host, a copy per block per call on CUDA.
    """
    length = 2 * size - 1
    if rel_pos.shape[0] != length:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
        rel_pos = resized.reshape(-1, length).permute(1, 0)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + (size - 1)]


def decomposed_rel_pos(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                       size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of SAM's (MViTv2) decomposed relative-position terms.

    q: (N, H*W, C) unscaled queries of N = batch*heads rows; rel_pos_h/w: (L, C) tables.
    Returns rel_h (N, H*W, H) = <q, Rh[qh-kh]> and rel_w (N, H*W, W) = <q, Rw[qw-kw]>.
    """
    height, width = size
    rh = rel_pos_table(height, rel_pos_h).to(q.dtype)  # (H, H, C)
    rw = rel_pos_table(width, rel_pos_w).to(q.dtype)  # (W, W, C)
    n, tokens, dim = q.shape
    r_q = q.reshape(n, height, width, dim)
    rel_h = torch.einsum("nhwc,hkc->nhwk", r_q, rh).reshape(n, tokens, height)
    rel_w = torch.einsum("nhwc,wkc->nhwk", r_q, rw).reshape(n, tokens, width)
    return rel_h, rel_w


def bias_from_terms(rel_h: torch.Tensor, rel_w: torch.Tensor, align: int = 1) -> torch.Tensor:
    """rel_h (N, Lq, H), rel_w (N, Lq, W) -> additive bias (N, Lq, H*W).

    bias[n, q, (kh, kw)] = rel_h[n, q, kh] + rel_w[n, q, kw]: exactly the terms
    ``add_decomposed_rel_pos`` adds, made by one broadcast add (no attention matrix involved).
    align > 1: the rows are laid out with a stride padded to a multiple of ``align`` (the view
    drops the padding). CUDA's memory-efficient SDPA kernel needs 16-element-aligned mask strides
    and otherwise copies the whole bias into a padded one (14x14 windows have 196 keys).
    """
    n, queries, height = rel_h.shape
    width = rel_w.shape[-1]
    keys = height * width
    padded = -(-keys // align) * align
    # add(out=...) has no autograd; when training, SDPA pads the bias itself (one more copy).
    needs_grad = torch.is_grad_enabled() and (rel_h.requires_grad or rel_w.requires_grad)
    if padded == keys or needs_grad:
        return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(n, queries, keys)
    buffer = torch.empty(n, queries, padded, dtype=torch.result_type(rel_h, rel_w), device=rel_h.device)
    bias = buffer[..., :keys]
    torch.add(rel_h[..., :, None], rel_w[..., None, :], out=bias.view(n, queries, height, width))
    return bias


def rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                 size: tuple[int, int]) -> torch.Tensor:
    """q (N, H*W, C) -> the full additive bias (N, H*W, H*W) of SAM's relative positions."""
    return bias_from_terms(*decomposed_rel_pos(q, rel_pos_h, rel_pos_w, size))


def _sdpa_chunked(q, k, v, scale, rel_h, rel_w, budget):
    """SDPA with the bias, over chunks of rows so one bias chunk has <= budget elements.

    Inputs go in as (1, rows, L, C): CUDA's fused kernels take only 4-D inputs (3-D ones fall
    back to the math kernel, which materialises the attention matrix).
    """
    n, tokens, _ = q.shape
    step = max(1, budget // (tokens * k.shape[1]))
    chunks = []
    for start in range(0, n, step):
        rows = slice(start, start + step)
        bias = bias_from_terms(rel_h[rows], rel_w[rows], align=16)
        out = F.scaled_dot_product_attention(
            q[None, rows], k[None, rows], v[None, rows], attn_mask=bias[None], scale=scale
        )
        chunks.append(out[0])
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _blocked(q, k, v, scale, rel_h, rel_w, budget):
    """Explicit attention over (rows, queries) blocks of <= budget score elements (CPU)."""
    n, tokens, _ = q.shape
    keys = k.shape[1]
    k_t = k.transpose(1, 2)
    q_step = min(tokens, max(1, budget // keys))
    n_step = max(1, budget // (q_step * keys))
    out_rows = []
    for r0 in range(0, n, n_step):
        rows = slice(r0, r0 + n_step)
        parts = []
        for q0 in range(0, tokens, q_step):
            qs = slice(q0, q0 + q_step)
            bias = bias_from_terms(rel_h[rows, qs], rel_w[rows, qs])
            scores = torch.baddbmm(bias, q[rows, qs], k_t[rows], alpha=scale)  # scale q kᵀ + bias
            parts.append(torch.bmm(scores.softmax(dim=-1), v[rows]))
        out_rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
    return out_rows[0] if len(out_rows) == 1 else torch.cat(out_rows)


def attention_with_rel_pos(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                           rel_pos_h: torch.Tensor | None, rel_pos_w: torch.Tensor | None,
                           size: tuple[int, int], method: str = "auto") -> torch.Tensor:
    """softmax(scale q kᵀ + rel-pos bias) v.

    q, k, v: (N, H*W, C) with N = batch*heads -> (N, H*W, C). method: "sdpa" (SDPA with the
    bias), "blocked" (cache-sized explicit blocks) or "auto" (blocked in eager mode on CPU,
    SDPA elsewhere and under torch.compile).
    """
    if rel_pos_h is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if method == "auto":
        # Under torch.compile the unrolled block loops would make a huge graph (~900 blocks for
        # ViT-B); one SDPA op is left to the compiler instead.
        eager_cpu = q.device.type == "cpu" and not torch.compiler.is_compiling()
        method = "blocked" if eager_cpu else "sdpa"
    rel_h, rel_w = decomposed_rel_pos(q, rel_pos_h, rel_pos_w, size)
    if method == "blocked":
        return _blocked(q, k, v, scale, rel_h, rel_w, CPU_BLOCK_BUDGET)
    if method == "sdpa":
        return _sdpa_chunked(q, k, v, scale, rel_h, rel_w, SDPA_BIAS_BUDGET)
    raise ValueError(f"unknown attention method {method!r}; expected 'auto', 'sdpa' or 'blocked'")


class FastAttention(Attention):
    """segment_anything's ``Attention`` with the fast forward (SDPA + bias, or CPU blocks).

    Never constructed directly: ``enable_fast_attention`` swaps the class of existing modules
    (parameters untouched)."""

    method = "auto"  # class default; set per module (e.g. by tests) to force "sdpa"/"blocked"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, dim) -> (B, H, W, dim), same as ``Attention.forward``."""
        batch, height, width, _ = x.shape
        heads = self.num_heads
        # (3, B*heads, H*W, C): the same layout as the reference, so the bias rows line up.
        qkv = self.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * heads, height * width, -1).unbind(0)
        out = attention_with_rel_pos(
            q, k, v, self.scale,
            self.rel_pos_h if self.use_rel_pos else None, self.rel_pos_w if self.use_rel_pos else None,
            (height, width), self.method,
        )
        out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out)


def _attention_modules(encoder: nn.Module):
    return [block.attn for block in encoder.blocks if isinstance(block.attn, Attention)]


def enable_fast_attention(encoder: nn.Module, enabled: bool = True) -> int:
    """Switch every ViT block of a SAM ``ImageEncoderViT`` to the SDPA path (or back).

    Returns the number of attention modules switched. State dict keys and tensors are unchanged.
    """
    modules = _attention_modules(encoder)
    for attn in modules:
        attn.__class__ = FastAttention if enabled else Attention
    return len(modules)


def fast_attention_enabled(encoder: nn.Module) -> bool:
    """True when every block of the encoder uses ``FastAttention``."""
    modules = _attention_modules(encoder)
    return bool(modules) and all(type(attn) is FastAttention for attn in modules)
