"""Adapters in SAM's ViT image encoder (REFSAM_SPEC step 2)."""
from __future__ import annotations

import torch
from torch import nn

from .resolution import resize_pos_embed


class Adapter(nn.Module):
    """Bottleneck adapter E -> E*ratio -> E with GELU; the last layer starts at zero.

    [ours] Zero-initialising the up-projection makes a fresh adapter an exact no-op, so a
    fresh RefSAM reproduces SAM's image embedding bit for bit.
    """

    def __init__(self, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) -> (..., E)."""
        return self.up(self.act(self.down(x)))


class BlockAdapters(nn.Module):
    """The two adapters of one ViT block: sequential after attention, parallel beside the MLP."""

    def __init__(self, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        self.attn_adapter = Adapter(dim, ratio)
        self.mlp_adapter = Adapter(dim, ratio)


class AdaptedImageEncoder(nn.Module):
    """Runs segment_anything's ``ImageEncoderViT`` with adapters in the second half of the blocks.

    SAM's encoder is passed to ``forward`` rather than owned, so its state dict keeps the official
    key names under ``sam.image_encoder``; this module owns only the adapters and re-implements the
    block forward where they are inserted. Returns the neck embedding and the hierarchy outputs.
    """

    def __init__(self, dim: int, adapted_blocks: tuple[int, ...], hierarchy_blocks: tuple[int, ...],
                 ratio: float = 0.25, parallel_scale: float = 0.5) -> None:
        super().__init__()
        self.adapted_blocks = tuple(adapted_blocks)
        self.hierarchy_blocks = tuple(hierarchy_blocks)
        self.parallel_scale = parallel_scale
        self.adapters = nn.ModuleDict({str(i): BlockAdapters(dim, ratio) for i in self.adapted_blocks})

    def _adapted_block(self, block: nn.Module, adapters: BlockAdapters, x: torch.Tensor) -> torch.Tensor:
        from segment_anything.modeling.image_encoder import window_partition, window_unpartition

        shortcut = x
        y = block.norm1(x)
        if block.window_size > 0:
            height, width = y.shape[1], y.shape[2]
            y, pad_hw = window_partition(y, block.window_size)
        y = block.attn(y)
        if block.window_size > 0:
            y = window_unpartition(y, block.window_size, pad_hw, (height, width))
        y = y + adapters.attn_adapter(y)
        x = shortcut + y
        normed = block.norm2(x)
        return x + block.mlp(normed) + self.parallel_scale * adapters.mlp_adapter(normed)

    def forward(self, enc: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """SAM encoder, images (B, 3, S, S) normalised and padded
        -> neck (B, C, S/p, S/p), hierarchy [(B, S/p, S/p, E)] x 3."""
        x = enc.patch_embed(images)
        if enc.pos_embed is not None:
            # Resized only when the model runs at another input size (modeling/resolution.py).
            x = x + resize_pos_embed(enc.pos_embed, x.shape[1:3])
        hierarchy = []
        for index, block in enumerate(enc.blocks):
            key = str(index)
            x = self._adapted_block(block, self.adapters[key], x) if key in self.adapters else block(x)
            if index in self.hierarchy_blocks:
                hierarchy.append(x)
        neck = enc.neck(x.permute(0, 3, 1, 2))
        return neck, hierarchy
