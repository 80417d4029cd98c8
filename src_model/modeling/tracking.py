"""Implicit Tracking Module (REFSAM_SPEC step 6): the track token carried to the next frame."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _ffn(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class ImplicitTrackingModule(nn.Module):
    """x = m_t + τ_{t-1}; a = LN(x + SelfAttn(x)); b = LN(a + FFN(a)); τ_t = LN(x + FFN'(b))."""

    def __init__(self, dim: int = 256, mlp_dim: int = 1024, num_heads: int = 8) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = _ffn(dim, mlp_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn_out = _ffn(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, mask_token: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """mask_token m_t (B, C), previous τ_{t-1} (B, C) or None -> τ_t (B, C)."""
        x = mask_token if previous is None else mask_token + previous
        a = self.norm1(x + self.single_token_attention(x))
        b = self.norm2(a + self.ffn(a))
        return self.norm3(x + self.ffn_out(b))

    def single_token_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``self.attn`` over a sequence of one token, x (B, C) -> (B, C).

        With one key the softmax weight is exactly 1, so self-attention returns out_proj(v_proj(x))
        whatever q and k are (and passes them no gradient). Computing that directly, from the
        same parameters, skips nn.MultiheadAttention's q/k projections and its bookkeeping: it was
        a third of the module's time in a CPU re-propagation step.
        """
        dim = x.shape[-1]
        value = F.linear(x, self.attn.in_proj_weight[2 * dim:], self.attn.in_proj_bias[2 * dim:])
        return self.attn.out_proj(value)
