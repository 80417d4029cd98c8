"""Training runs on disk: the run folder, resumable checkpoints and exported weights (see train.py)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .atomic import OutputExistsError

RUN_FILES = ("checkpoint.pt", "refsam.safetensors", "train_log.csv")


def check_run_folder(out: Path, opts) -> None:
    """Refuse to start a new run over an earlier one: forgetting --resume must not cost hours of training."""
    if opts.resume or getattr(opts, "overwrite", False):
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise OutputExistsError(f"{out} already holds a training run ({', '.join(found)}); pass --resume to "
                                "continue it, --overwrite to start over, or another --out")
    if opts.export and Path(opts.export).exists():
        raise OutputExistsError(f"--export {opts.export} already exists; pass --overwrite to replace it")
    if opts.export and not Path(opts.export).parent.is_dir():
        raise FileNotFoundError(f"--export {opts.export}: folder {Path(opts.export).parent} does not exist")


def _model_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}


def save_checkpoint(path: Path, model, optimizer, step: int, generator: torch.Generator, opts,
                    seconds: float = 0.0) -> None:
    from .atomic import atomic_path

    state = {
        "model": _model_state(model), "optimizer": optimizer.state_dict(), "step": step, "seconds": seconds,
        # Data items are a function of (seed, epoch, index), so the torch states are all there is.
        "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state()},
        "options": {k: v for k, v in asdict(opts).items() if k != "lrs"}, "lrs": dict(opts.lrs),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model, optimizer, generator: torch.Generator) -> tuple[int, float]:
    """Restore model, optimiser and random state; returns (step, seconds trained so far)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["generator"])
    return int(state["step"]), float(state.get("seconds", 0.0))


def export_weights(model, path: Path, train_sam: bool, fp16: bool, step: int,
                   inference_image_size: int | None = None, sam_checkpoint=None) -> None:
    """Write the trained model as RefSAM safetensors, with the encoder input size ``load_refsam``
    should run it at, if one is given.

    Only the RefSAM parts when SAM stayed frozen at an official checkpoint (loading then takes
    that checkpoint again, as in the paper); every part otherwise - SAM trained here, or taken
    from a RefSAM file such as the bundled model, which no SAM checkpoint can restore.
    """
    from .weights import ALL_PARTS, REFSAM_PARTS, save_refsam

    model.heads_trained = True
    parts = REFSAM_PARTS if sam_checkpoint is not None and not train_sam else ALL_PARTS
    if fp16:
        # Save a half copy; the model being trained stays in fp32.
        import copy

        half = copy.deepcopy(model).half()
        model = half
    extra = {"trained_steps": step, "trained_from_scratch": train_sam}
    if inference_image_size:
        extra["inference_image_size"] = int(inference_image_size)
    save_refsam(model, path, parts=parts, extra=extra)
