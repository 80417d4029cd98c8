"""Saving and loading RefSAM weights, and ``load_refsam`` (the public entry point).

RefSAM weights are one safetensors file whose header metadata holds a JSON config (format
version, preset and full model config, text encoder id and dimension, which parts are included).
Official SAM checkpoints are read with ``torch.load(weights_only=True)`` (see sam.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .config import RefSAMConfig, preset_config
from .errors import CheckpointError
from .sam import load_sam_state, read_sam_checkpoint

FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).parent / "weights"
BUNDLED = {"default": BUNDLED_DIR / "refsam_tiny_synthetic.safetensors"}
# Parts saved by default: what training changes. A model trained from scratch also saves SAM.
REFSAM_PARTS = ("adapters", "text_mlp", "hda", "itm", "sam.mask_decoder")
ALL_PARTS = REFSAM_PARTS + ("sam.image_encoder", "sam.prompt_encoder")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda, then mps, then cpu; anything else as given (checked)."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CheckpointError(f"device {str(device)!r} was asked for but torch sees {torch.cuda.device_count()} GPU(s)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise CheckpointError("device 'mps' was asked for but this torch has no usable Apple GPU (MPS); "
                              "use --device cpu or auto")
    return device


def _parts_state(model, parts) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()
            if any(k == p or k.startswith(p + ".") for p in parts)}


def save_refsam(model, path: str | os.PathLike, parts=REFSAM_PARTS, extra: dict | None = None) -> Path:
    """Write the given parts of ``model`` and its config to a safetensors file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    # The native config: a model running at a lower input size (set_image_size) saves its own geometry.
    native = getattr(model, "native_config", model.config)
    config = {
        "format_version": FORMAT_VERSION, "preset": native.preset, "config": native.to_dict(),
        "text_encoder": getattr(model.text_encoder, "name", None), "text_dim": model.config.text_dim,
        "parts": list(parts), **(extra or {}),
    }
    with atomic_path(path) as tmp:
        save_file(_parts_state(model, parts), str(tmp), metadata={"refsam": json.dumps(config)})
    return path


def read_refsam_file(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a RefSAM safetensors file -> (config dict, state dict); clear errors for wrong files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a .safetensors file" if path.is_dir() else "do not exist"
        raise CheckpointError(f"RefSAM weights {path} {what}")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path} is a pickle/torch archive; RefSAM weights must be a .safetensors file "
            "(an official SAM .pth goes to sam_checkpoint=/--sam-checkpoint)"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as safetensors (truncated or not safetensors?): {exc}") from None
    if "refsam" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file without a RefSAM config (metadata key 'refsam')")
    config = json.loads(metadata["refsam"])
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {config['format_version']}; this napari-refsam reads up to {FORMAT_VERSION}"
        )
    return config, state


def load_state_checked(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a partial state dict; list missing parts' keys and mismatched shapes by name."""
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and own[k].shape != state[k].shape]
    if unexpected or mismatched:
        lines = mismatched[:8] + [f"{k}: not in the model" for k in unexpected[:8]]
        raise CheckpointError(f"{source} does not fit this model ({len(mismatched)} shape mismatches, "
                              f"{len(unexpected)} unknown keys):\n  " + "\n  ".join(lines))
    model.load_state_dict(state, strict=False)


def build_text_encoder(name):
    from .text import TextEncoder

    return TextEncoder(name)


def load_refsam(weights: str | os.PathLike | None = "default", *, preset: str | None = None,
                sam_checkpoint: str | os.PathLike | None = None, text_encoder=None,
                device: str | torch.device | None = "auto", text_dim: int | None = None,
                fast: bool = True, image_size: int | None = None, bf16: bool | str = "auto"):
    """Build a RefSAM model (DESIGN.md "Public API").

    weights: "default" (the bundled model), a path to RefSAM .safetensors, or None for a fresh model
    of ``preset`` (random weights, or plain SAM + untrained heads when ``sam_checkpoint`` is given).
    text_encoder: a name/folder, an already built TextEncoder, False for none, or None for the
    weights' own encoder (MiniLM for fresh models).
    fast: SDPA attention in the image encoder (same results; ``model.enable_fast_attention``).
    bf16: run the image encoder under bf16 autocast: "auto" = on for CUDA GPUs that have fast bf16
    (and CPUs with AVX512-BF16/AMX only when True is passed: their speed-up varies); features are fp32.
    image_size: run the encoder at this input size instead of the native one (e.g. 512 for ViT-B
    on CPU; a speed/quality trade-off, ``model.set_image_size``). None: the size the weights file
    recommends (``inference_image_size`` in its metadata; the bundled model's is 256, twice the
    size it was trained at: finer masks, see src_model/weights/README.md), else the native one.
    """
    from .modeling.refsam import RefSAM

    file_config: dict | None = None
    state: dict[str, torch.Tensor] = {}
    source = str(weights)
    if weights is not None:
        path = BUNDLED.get(str(weights), Path(weights))
        if str(weights) in BUNDLED and not path.is_file():
            raise CheckpointError(
                f"the bundled model {weights!r} is not installed ({path} is missing); train it with the command "
                "in README.md, or pass a weights path / weights=None with a preset"
            )
        file_config, state = read_refsam_file(path)
        config = RefSAMConfig.from_dict(file_config["config"])
        if sam_checkpoint is None and not any(k.startswith("sam.image_encoder.") for k in state):
            # Without it the image encoder would run on random weights: masks of nothing, silently.
            raise CheckpointError(
                f"{path} holds only the RefSAM parts (no SAM image encoder); pass the official {config.preset} "
                "SAM checkpoint it was trained with: sam_checkpoint= (CLI: --sam-checkpoint)")
        if preset is not None and preset != config.preset:
            raise CheckpointError(f"{path} holds a {config.preset} model, but preset={preset!r} was asked for")
    else:
        config = preset_config(preset or "vit_b", text_dim=text_dim or 384)

    if text_encoder is None:
        text_encoder = (file_config or {}).get("text_encoder") or "minilm"
    if text_encoder is False:
        encoder = None
    elif isinstance(text_encoder, torch.nn.Module):
        encoder = text_encoder
    else:
        encoder = build_text_encoder(text_encoder)
    if encoder is not None and encoder.dim != config.text_dim:
        if file_config is not None:
            raise CheckpointError(
                f"text encoder {getattr(encoder, 'name', text_encoder)!r} gives {encoder.dim}-d features but "
                f"{source} was trained with a {config.text_dim}-d encoder ({file_config.get('text_encoder')!r})"
            )
        config = RefSAMConfig.from_dict({**config.to_dict(), "text_dim": encoder.dim})

    model = RefSAM(config, encoder)
    if sam_checkpoint is not None:
        load_sam_state(model.sam, read_sam_checkpoint(sam_checkpoint), config.preset, source=str(sam_checkpoint))
    if state:
        load_state_checked(model, state, source)
    elif sam_checkpoint is not None:
        model.heads_trained = False
    model = model.to(resolve_device(device)).eval()
    model.enable_fast_attention(fast)
    if bf16 == "auto":
        bf16 = "auto" if model.device.type == "cuda" else False
    model.enable_bf16(bf16)
    # What the file recommends is kept on the model, so a fine-tuned export can carry it on.
    model.inference_image_size = (file_config or {}).get("inference_image_size")
    if image_size is None:
        image_size = model.inference_image_size
    if image_size is not None:
        model.set_image_size(image_size)
    return model


def set_inference_image_size(path: str | os.PathLike, image_size: int | None) -> Path:
    """Record in a RefSAM file the encoder input size ``load_refsam`` runs it at by default
    (None: its native size). Rewrites the file atomically; the tensors are unchanged."""
    from safetensors.torch import save_file

    from .modeling.resolution import check_image_size

    path = Path(path)
    config, state = read_refsam_file(path)
    if image_size is None:
        config.pop("inference_image_size", None)
    else:
        config["inference_image_size"] = check_image_size(int(image_size), config["config"]["sam"]["patch_size"])
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"refsam": json.dumps(config)})
    return path


def weights_signature(model) -> str:
    """A short signature of the weights in use (feature caches are keyed by it).

    Hashes a strided sample of every tensor, so random models differ and a retrained model never
    reuses another's cache, at a cost of milliseconds even for ViT-H.
    """
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in model.state_dict().items():
        if key.startswith("text_encoder."):
            continue
        flat = value.detach().flatten()
        step = max(1, flat.numel() // 64)
        digest.update(key.encode())
        digest.update(flat[::step][:64].float().cpu().numpy().tobytes())
    digest.update(str(getattr(model.text_encoder, "name", None)).encode())
    return digest.hexdigest()
