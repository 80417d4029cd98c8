"""Configurations of RefSAM models and the named presets (vit_b, vit_l, vit_h, tiny)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamConfig:
    """Shapes of the Segment Anything part. Defaults are SAM ViT-B."""

    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    mask_in_chans: int = 16
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding (64 for 1024 / 16)."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class RefSAMConfig:
    """Everything needed to rebuild a RefSAM module (stored next to its weights)."""

    preset: str = "vit_b"
    sam: SamConfig = field(default_factory=SamConfig)
    text_dim: int = 384
    adapter_ratio: float = 0.25
    parallel_adapter_scale: float = 0.5
    itm_mlp_dim: int = 1024
    itm_num_heads: int = 8
    mask_threshold: float = 0.0

    @property
    def adapted_blocks(self) -> tuple[int, ...]:
        """Blocks that get adapters: the second half of the ViT (REFSAM_SPEC step 2)."""
        depth = self.sam.encoder_depth
        return tuple(range(depth // 2, depth))

    @property
    def hierarchy_blocks(self) -> tuple[int, ...]:
        """The first three global-attention blocks, whose outputs feed HDA."""
        return tuple(self.sam.encoder_global_attn_indexes[:3])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RefSAMConfig":
        data = dict(data)
        sam = dict(data.pop("sam", {}))
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in sam:
                sam[key] = tuple(sam[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown RefSAM config keys {sorted(unknown)}")
        return cls(sam=SamConfig(**sam), **data)


SAM_PRESETS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    # [ours] A small SAM-architecture model: same modules, fewer/narrower layers, 256-px input and
    # an 8-px patch so the 32x32 embedding still resolves small objects. Used by the tests and by
    # the bundled default model (trained from scratch on synthetic videos).
    "tiny": SamConfig(
        encoder_embed_dim=128, encoder_depth=6, encoder_num_heads=4,
        encoder_global_attn_indexes=(1, 3, 5), window_size=8, image_size=256, patch_size=8,
        prompt_embed_dim=128, decoder_depth=2, decoder_mlp_dim=512, decoder_num_heads=4,
        mask_in_chans=16,
    ),
}


def preset_config(preset: str, text_dim: int = 384, **overrides: Any) -> RefSAMConfig:
    """The RefSAM config of a named preset, with the text feature size of the chosen encoder."""
    if preset not in SAM_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(SAM_PRESETS)}")
    sam = SAM_PRESETS[preset]
    extra = {"itm_mlp_dim": 4 * sam.prompt_embed_dim, "itm_num_heads": sam.decoder_num_heads}
    extra.update(overrides)
    return RefSAMConfig(preset=preset, sam=sam, text_dim=text_dim, **extra)
