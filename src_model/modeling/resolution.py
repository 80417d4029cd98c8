"""Running SAM's encoder at another input size (issue 7: the CPU speed/quality option).

SAM ViT-B at 1024 px costs ~0.5 TMAC per frame, and its global-attention blocks grow with the
square of the token count. At 512 px the encoder sees 4x fewer tokens, at 768 px 1.8x fewer
(measured on the dev CPU: ViT-B 22 s -> 4.7 s / 8.8 s per frame, BENCHMARKS.md); the embedding
grid shrinks with it (64 -> 32 or 48 cells), so masks lose fine detail and small objects (a 32-px
object at 1024 covers one embedding cell at 512).

Nothing in the state dict changes: the absolute position embedding is resized on the fly
(bicubic, as ViTDet/SAM fine-tuning code does) and the global blocks' relative-position tables are
resized linearly by ``get_rel_pos`` (or ``fast_attention.rel_pos_table``) when the grid differs
from the one they were trained for. Windowed blocks keep their 14x14 windows (padded as usual).
Only geometry attributes change: the encoder/prompt-encoder sizes and the model config.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, h, w, E) absolute position embedding -> (1, h', w', E), bicubic; same tensor if equal."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


# Largest embedding grid side. SAM's own is 64 (1024 px); 128 already gives 16,384 tokens, whose
# global attention needs GiBs. Larger sizes only exhaust memory.
MAX_GRID = 128


def check_image_size(image_size: int, patch_size: int) -> int:
    """Validate an encoder input size: a multiple of the patch size, 4 to ``MAX_GRID`` patches a side."""
    size = int(image_size)
    if size != image_size or size % patch_size or not 4 * patch_size <= size <= MAX_GRID * patch_size:
        raise ValueError(
            f"image_size must be a multiple of the patch size {patch_size} between {4 * patch_size} and "
            f"{MAX_GRID * patch_size}; got {image_size}"
        )
    return size


def set_sam_geometry(sam: nn.Module, image_size: int, patch_size: int) -> None:
    """Point SAM's encoder and prompt encoder at a new square input size (in place).

    The prompt encoder normalises point/box coordinates by ``input_image_size``, builds the dense
    positional encoding on ``image_embedding_size`` and expects mask prompts at 4x that grid.
    """
    grid = image_size // patch_size
    sam.image_encoder.img_size = image_size
    pe = sam.prompt_encoder
    pe.input_image_size = (image_size, image_size)
    pe.image_embedding_size = (grid, grid)
    pe.mask_input_size = (4 * grid, 4 * grid)
