"""Importing segment_anything (with or without torchvision), building SAM, official checkpoints.

segment_anything imports torchvision at package import time, for two helpers it uses on the
host: ``resize``/``to_pil_image`` (SamPredictor's ResizeLongestSide) and ``batched_nms``/``box_area``
(the automatic mask generator). CPU-only torch has no torchvision wheel here, so when it is
missing we put a minimal stand-in under that name *only while segment_anything is imported*,
then remove it again so that other libraries (transformers checks for torchvision) still see
that torchvision is absent. The stand-ins do exactly what torchvision does for PIL input.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .config import SAM_PRESETS, SamConfig
from .errors import CheckpointError


def _pil_resize(image, size, *args, **kwargs):
    """torchvision's resize of a PIL image to (h, w): PIL bilinear (which antialiases)."""
    from PIL import Image

    height, width = size
    return image.resize((width, height), Image.BILINEAR)


def _to_pil_image(array):
    from PIL import Image

    return Image.fromarray(np.asarray(array))


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _batched_nms(boxes, scores, idxs, iou_threshold):
    """Greedy per-category NMS (plain torch; only the automatic mask generator uses it)."""
    order = scores.argsort(descending=True)
    keep: list[int] = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    area = _box_area(boxes)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (area[i] + area - inter)
        suppressed |= (iou > iou_threshold) & (idxs == idxs[i])
    return torch.tensor(keep, dtype=torch.long)


def _stand_in_torchvision() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    functional.resize = _pil_resize
    functional.to_pil_image = _to_pil_image
    boxes.batched_nms = _batched_nms
    boxes.box_area = _box_area
    root.transforms, transforms.functional, root.ops, ops.boxes = transforms, functional, ops, boxes
    return {
        "torchvision": root, "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional, "torchvision.ops": ops,
        "torchvision.ops.boxes": boxes,
    }


def import_segment_anything() -> types.ModuleType:
    """Import segment_anything, using the real torchvision when it is installed."""
    if "segment_anything" in sys.modules:
        return sys.modules["segment_anything"]
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("segment_anything")
    stand_ins = _stand_in_torchvision()
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("segment_anything")
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def build_sam(config: SamConfig):
    """Build segment_anything's ``Sam`` with the given shapes (random weights, eval mode)."""
    sa = import_segment_anything()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    emb = config.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth, embed_dim=config.encoder_embed_dim, img_size=config.image_size,
            mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads, patch_size=config.patch_size, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.window_size, out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(config.image_size, config.image_size), mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim, iou_head_depth=3,
            iou_head_hidden_dim=config.prompt_embed_dim,
        ),
        pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std),
    )
    del sa
    return sam.eval()


def read_sam_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official SAM ``.pth`` state dict safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(8)
        kind = "a safetensors file" if head[:1] == b"{" or len(head) == 8 and head[7:8] == b"\x00" else "not a torch zip archive"
        raise CheckpointError(
            f"SAM checkpoint {path} is {kind}; expected an official PyTorch .pth file "
            "(a zip archive, like sam_vit_b_01ec64.pth)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated archives, foreign pickles
        raise CheckpointError(f"cannot read SAM checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"SAM checkpoint {path} does not hold a state dict of tensors")
    return state


def guess_sam_variant(state: dict[str, torch.Tensor]) -> str:
    """Name the preset whose encoder width and depth match a SAM state dict ("unknown" if none)."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return "unknown"
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, cfg in SAM_PRESETS.items():
        if cfg.encoder_embed_dim == weight.shape[0] and cfg.encoder_depth == depth:
            return name
    return f"unknown (width {weight.shape[0]}, depth {depth})"


def load_sam_state(sam, state: dict[str, torch.Tensor], variant: str, source: str = "checkpoint") -> None:
    """Load a SAM state dict strictly; name both variants and offending keys on mismatch."""
    own = sam.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        found = guess_sam_variant(state)
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(
                    f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" if label == "shape mismatch" else k
                    for k in keys[:4]
                )
                details.append(f"{len(keys)} {label} (e.g. {shown})")
        raise CheckpointError(
            f"{source} is a SAM {found} checkpoint but the model is SAM {variant}: " + "; ".join(details)
        )
    sam.load_state_dict(state, strict=True)
