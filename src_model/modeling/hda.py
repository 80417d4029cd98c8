"""Hierarchical Dense Attention (REFSAM_SPEC step 4, reconstructed to fit the paper's counts)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) map (as SAM's)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class DenseAttention(nn.Module):
    """DA(G, K): every pixel attends over the text keys; D = Conv1x1([Ḡ, A K])."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * dim, dim, kernel_size=1)
        # [ours] A learnable temperature (as a log, so it stays positive), initialised to the
        # spec's 1/sqrt(C). Unit-norm pixels and keys give scores within +-1/sqrt(C), so with a
        # fixed scale the softmax over the words is nearly uniform and cannot pick a word per pixel.
        # Weights saved before it existed load unchanged (the parameter keeps its initial value).
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(dim)))

    def forward(self, grid: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor,
                normalized: bool = False) -> torch.Tensor:
        """grid (B, C, H, W), keys (B, N, C), key_mask (B, N) bool -> (B, C, H, W).

        normalized: the grid is already unit-norm per pixel (F̄), so it is not normalised again.
        """
        g = grid if normalized else F.normalize(grid, dim=1)
        logits = torch.einsum("bchw,bnc->bhwn", g, keys) * self.log_scale.exp()
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        attended = torch.einsum("bhwn,bnc->bchw", logits.softmax(dim=-1), keys)
        return self.proj(torch.cat([g, attended], dim=1))


class HierarchicalDenseAttention(nn.Module):
    """Text-conditioned dense prompt from the neck (F̄) and from the hierarchy (F_h) branches."""

    def __init__(self, encoder_dim: int, dim: int = 256, levels: int = 3) -> None:
        super().__init__()
        self.hier_proj = nn.Conv2d(levels * encoder_dim, dim, kernel_size=1)
        self.hier_norm = LayerNorm2d(dim)
        self.neck_attention = DenseAttention(dim)
        self.hier_attention = DenseAttention(dim)
        self.mix = nn.Parameter(torch.tensor(0.5))

    def hierarchy_features(self, hierarchy: list[torch.Tensor]) -> torch.Tensor:
        """[(B, H, W, E)] x 3 -> F_h (B, C, H, W); text-independent, so it is cached per frame."""
        stacked = torch.cat([h.permute(0, 3, 1, 2) for h in hierarchy], dim=1)
        return self.hier_norm(self.hier_proj(stacked))

    def forward(self, neck_normed: torch.Tensor, hier: torch.Tensor, keys: torch.Tensor,
                key_mask: torch.Tensor) -> torch.Tensor:
        """F̄ (B, C, H, W), F_h (B, C, H, W), K (B, N+1, C), mask (B, N+1) -> D (B, C, H, W)."""
        d_neck = self.neck_attention(neck_normed, keys, key_mask, normalized=True)
        d_hier = self.hier_attention(hier, keys, key_mask)
        return self.mix * d_neck + (1.0 - self.mix) * d_hier
