"""Training losses (REFSAM_SPEC "Training"): dice + sigmoid focal, 1:1, per frame, on full-resolution logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask: logits, targets (N, H, W) -> (N,).

    The +1 smoothing makes an empty target with an empty prediction cost 0 (objects may be
    fully occluded in a frame) instead of 0/0.
    """
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1).to(probs.dtype)
    inter = (probs * targets).sum(1)
    return 1.0 - (2.0 * inter + smooth) / (probs.sum(1) + targets.sum(1) + smooth)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.) averaged over the pixels of each mask: (N, H, W) -> (N,)."""
    targets = targets.to(logits.dtype)
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(1).mean(1)


def mask_losses(logits: torch.Tensor, targets: torch.Tensor, focal_weight: float = 1.0,
                dice_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-frame losses averaged over frames: logits (N, H, W) float, targets (N, H, W) bool.

    Computed in fp32 whatever the autocast dtype (bf16 sigmoids underflow the focal term).
    Returns {"loss", "dice", "focal"} scalars.
    """
    logits = logits.float()
    dice = dice_loss(logits, targets).mean()
    focal = sigmoid_focal_loss(logits, targets).mean()
    return {"loss": dice_weight * dice + focal_weight * focal, "dice": dice, "focal": focal}
