"""Parameter accounting per component (``refsam info``)."""
from __future__ import annotations

from .config import preset_config

PAPER_TRAINABLE = {"vit_b": 9.9e6, "vit_l": 19.1e6, "vit_h": 33.0e6}
PAPER_SAM_TOTAL = {"vit_b": 93.7e6, "vit_l": 312.3e6, "vit_h": 641.1e6}


def count_parameters(model) -> dict:
    """{component: {total, trainable, frozen}} plus totals; SAM total is encoder+prompt+decoder."""
    components = {}
    for name, module in model.part_modules().items():
        total = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        components[name] = {"total": total, "trainable": trainable, "frozen": total - trainable}
    sam_total = sum(components[k]["total"] for k in ("image_encoder", "prompt_encoder", "mask_decoder"))
    result = {
        "preset": model.config.preset, "text_dim": model.config.text_dim, "components": components,
        "total_parameters": sum(c["total"] for c in components.values()),
        "trainable_parameters": sum(c["trainable"] for c in components.values()),
        "frozen_parameters": sum(c["frozen"] for c in components.values()),
        "sam_parameters": sam_total,
    }
    if model.config.preset in PAPER_TRAINABLE:
        result["paper_trainable_parameters"] = PAPER_TRAINABLE[model.config.preset]
        result["paper_sam_parameters"] = PAPER_SAM_TOTAL[model.config.preset]
    return result


def info_model(preset: str, text_dim: int):
    """A RefSAM of ``preset`` without a text encoder (accounting only needs the MLP's input size)."""
    import torch

    from .modeling.refsam import RefSAM

    with torch.device("meta"):
        # The meta device skips allocating ViT-H's 2.5 GB of random weights just to count them.
        return RefSAM(preset_config(preset, text_dim=text_dim), None)
