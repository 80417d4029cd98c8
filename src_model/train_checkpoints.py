"""Training runs on disk: the run folder, resumable checkpoints and exported weights (see train.py)."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from .atomic import OutputExistsError
from .errors import CheckpointError

RUN_FILES = ("checkpoint.pt", "refsam.safetensors", "train_log.csv")


def check_run_folder(out: Path, opts) -> None:
    """Refuse to start a new run over an earlier one: forgetting --resume must not cost hours of training.

    Also refuses, before any work, outputs that could only fail at the first save.
    """
    # A file at --out (or above it) would fail only at mkdir, as "[Errno 17] File exists".
    blocking = next(p for p in (out, *out.parents) if p.exists())
    if not blocking.is_dir():
        where = f"--out {out}" if blocking == out else f"--out {out}: {blocking}"
        raise NotADirectoryError(f"{where} is a file, not a folder; --out names the folder the run writes "
                                 "checkpoint.pt, refsam.safetensors and train_log.csv into")
    export = Path(opts.export) if opts.export else None
    if export is not None and export.is_dir():
        raise IsADirectoryError(f"--export {export} is a folder; pass a file path such as {export / 'refsam.safetensors'}")
    if export is not None and not export.parent.is_dir():
        raise FileNotFoundError(f"--export {export}: folder {export.parent} does not exist")
    if opts.resume or getattr(opts, "overwrite", False):
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise OutputExistsError(f"{out} already holds a training run ({', '.join(found)}); pass --resume to "
                                "continue it, --overwrite to start over, or another --out")
    if export is not None and export.exists():
        raise OutputExistsError(f"--export {export} already exists; pass --overwrite to replace it")


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


_START_OVER = "start a new run with another --out (or --overwrite to replace this one)"
# Options that decide which model a run trains: a resumed run must be given the saved ones.
MODEL_OPTIONS = ("preset", "weights", "sam_checkpoint", "text_encoder", "from_scratch", "image_size")


def read_checkpoint(path: Path) -> dict:
    """The saved state of a run; a one-line CheckpointError when the file is damaged or not a checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # unreadable (permissions, ...): the CLI names the file and the reason
    except Exception as exc:
        # torch's own text is zip-reader internals, or advice to load with weights_only=False,
        # i.e. to run code from a file that is not a checkpoint: never shown to the user.
        raise CheckpointError(f"cannot resume: {path} is truncated or not a checkpoint of refsam train; "
                              f"{_START_OVER}") from exc
    if not (isinstance(state, dict) and "step" in state
            and all(isinstance(state.get(key), dict) for key in ("model", "optimizer", "rng", "options"))):
        raise CheckpointError(f"cannot resume: {path} is not a checkpoint of refsam train; {_START_OVER}")
    return state


def _model_options(options: dict, default_image_size: int) -> dict:
    """MODEL_OPTIONS with defaults spelled out, so that leaving an option out and giving its
    default value compare equal."""
    from .text import _ALIASES as MINILM_NAMES

    values = {key: options.get(key) for key in MODEL_OPTIONS}
    for key in ("weights", "sam_checkpoint", "text_encoder"):
        if values[key] is not None:
            values[key] = os.path.normpath(str(values[key]))
    encoder = values["text_encoder"]
    if (encoder is None and values["weights"] is None) or str(encoder).lower() in MINILM_NAMES:
        values["text_encoder"] = "minilm"  # a fresh model's default encoder
    values["from_scratch"] = bool(values["from_scratch"])
    values["image_size"] = values["image_size"] or default_image_size
    return values


def check_resume_options(path: Path, saved_options: dict, opts, default_image_size: int) -> None:
    """Refuse to resume a run with other model options (it would fail on the weights' shapes, or
    silently continue another model than the one asked for). default_image_size: the encoder
    input size of the model the options build without --image-size."""
    saved = _model_options(saved_options, default_image_size)
    now = _model_options(asdict(opts), default_image_size)
    if saved["weights"] is not None or now["weights"] is not None:
        saved["preset"] = now["preset"] = None  # the weights file decides the preset

    def show(value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return "not given" if value is None else str(value)

    differ = [f"--{key.replace('_', '-')} {show(saved[key])} (now {show(now[key])})"
              for key in MODEL_OPTIONS if key in saved_options and saved[key] != now[key]]  # absent: older file
    if differ:
        raise CheckpointError(f"cannot resume: {path} was saved by a run with other model options: "
                              f"{'; '.join(differ)}; resume with that run's options, or {_START_OVER}")


def restore_checkpoint(path: Path, state: dict, model, optimizer, generator: torch.Generator) -> tuple[int, float]:
    """Restore model, optimiser and random state from ``read_checkpoint``'s state; returns
    (step, seconds trained so far)."""
    ours, saved = _model_state(model), state["model"]
    odd = sorted(str(key) for key in set(ours) ^ set(saved)) + [
        key for key in ours if key in saved and tuple(getattr(saved[key], "shape", ())) != tuple(ours[key].shape)]
    if odd:  # torch would say it in a screenful of "size mismatch for ..." lines
        raise CheckpointError(f"cannot resume: {path} holds another model than this run builds ({len(odd)} "
                              f"tensor(s) differ, e.g. {odd[0]}); resume with that run's --preset, --image-size, "
                              f"--weights and --text-encoder, or {_START_OVER}")
    try:
        model.load_state_dict(saved, strict=False)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["generator"])
        return int(state["step"]), float(state.get("seconds", 0.0))
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot resume: {path} does not fit this run's model or optimiser "
                              f"({type(exc).__name__}); resume with that run's options, or {_START_OVER}") from exc


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
