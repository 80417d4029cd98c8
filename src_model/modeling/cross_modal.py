"""Cross-Modal MLP: text features into SAM's prompt space (REFSAM_SPEC "Once per expression")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossModalMLP(nn.Module):
    """Linear(d, d/2) -> ReLU -> Linear(d/2, C), rows L2-normalised; shared by words and sentence."""

    def __init__(self, text_dim: int, prompt_dim: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(text_dim, text_dim // 2)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(text_dim // 2, prompt_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_text) -> (..., C), unit L2 norm per row."""
        return F.normalize(self.fc2(self.act(self.fc1(x))), dim=-1)
