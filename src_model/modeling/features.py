"""What RefSAM passes between its steps: frame features, projected expressions, decode outputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FrameFeatures:
    """Text-independent features of frames (what the cache stores).

    embedding: (B, C, h, w) SAM neck output F; hier: (B, C, h, w) F_h;
    input_size: (h', w') of the resized frame inside the padded square; original_size: (H, W).
    """

    embedding: torch.Tensor
    hier: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    def __len__(self) -> int:
        return self.embedding.shape[0]

    def select(self, rows) -> "FrameFeatures":
        return FrameFeatures(self.embedding[rows], self.hier[rows], self.input_size, self.original_size)


@dataclass
class TextPrompt:
    """Projected expression. words: (B, N, C) unit rows; mask: (B, N) bool; sentence: (B, C)."""

    words: torch.Tensor
    mask: torch.Tensor
    sentence: torch.Tensor

    def select(self, rows) -> "TextPrompt":
        return TextPrompt(self.words[rows], self.mask[rows], self.sentence[rows])


@dataclass
class DecodeOutput:
    """low_res_logits (B, 1, 4h, 4w); iou (B, 1); mask_token m_t (B, C); track τ_t (B, C)."""

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    mask_token: torch.Tensor
    track: torch.Tensor
