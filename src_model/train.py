"""Training RefSAM on referring-video clips (REFSAM_SPEC "Training" + "Extension for correction").

One optimiser step = ``accum`` micro-batches of ``batch_size`` clips of ``num_frames`` frames.
Per clip the frames are decoded online with the track token carried (not detached) from frame
to frame, so gradients flow through the clip; each frame's full-resolution logits get dice +
sigmoid focal loss (1:1). Prompt dropout: with probability ``prompt_dropout`` a frame t > 0
also gets the previous frame's ground-truth mask, perturbed, as a mask prompt (what propagation
after a user correction feeds the decoder), and with probability ``keyframe_prob`` frame 0 gets
its own ground-truth mask (the keyframe re-initialisation of the track token).

Runs on one CPU/GPU or under ``torchrun`` (gradients all-reduced by hand, which copes with
parameters unused in a step; a DistributedSampler shards the data; only rank 0 writes).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import TrainingDivergedError
from .train_checkpoints import (check_resume_options, check_run_folder, export_weights, read_checkpoint,
                                restore_checkpoint, save_checkpoint)
from .train_clip import TextCache, clip_forward
from .train_data import build_dataset, fit_step_to_dataset, micro_batches, step_batches

# Paper learning rates for a pretrained (frozen) SAM; the decoder barely moves (1e-4 breaks it).
PRETRAINED_LRS = {"adapters": 1e-4, "text_mlp": 1e-4, "hda": 1e-4, "itm": 1e-4, "mask_decoder": 1e-6}
# [ours] Without pretrained SAM every part starts random, so every part (encoder, prompt encoder
# and decoder included) gets one higher rate; 3e-4 with warm-up is stable for the tiny preset.
SCRATCH_LR = 3e-4
LR_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder", "adapters", "text_mlp", "hda", "itm")
# train_log.csv: means over the steps since the last row; lr is the largest learning rate of the
# parameter groups at that step (fine-tuning a pretrained SAM: the adapters' and heads' rate, not
# the mask decoder's 100x smaller one); time is seconds since the run began.
CSV_FIELDS = ("step", "loss", "dice", "focal", "iou", "lr", "time")


@dataclass
class TrainOptions:
    """Everything a run needs (the ``refsam train`` flags). ``data="synthetic"`` streams clips."""

    data: str = "synthetic"
    split: str | None = None
    out: str = "runs/refsam"
    preset: str = "tiny"
    weights: str | None = None
    sam_checkpoint: str | None = None
    text_encoder: str | None = None
    from_scratch: bool = False
    steps: int = 1000
    max_minutes: float | None = None
    batch_size: int = 2
    accum: int = 1
    num_frames: int = 3
    objects_per_clip: int = 1
    size: int | None = None
    image_size: int | None = None
    inference_image_size: int | None = None
    synthetic_size: int = 128
    synthetic_frames: int = 8
    lr: float | None = None
    lrs: dict = field(default_factory=dict)
    weight_decay: float = 0.01
    warmup: int = 0
    schedule: str = "constant"
    clip_grad: float = 1.0
    prompt_dropout: float = 0.5
    keyframe_prob: float = 0.15
    box_prob: float = 0.0  # share of rows trained as box / click prompt objects (train_clip)
    refine_prob: float = 0.0  # share of their anchors given a mask to correct (train_clip)
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    workers: int = 0  # data worker processes building micro-batches ahead of the GPU (0: in this process)
    log_every: int = 10
    save_every: int = 200
    export: str | None = None
    export_fp16: bool = False
    resume: bool = False
    overwrite: bool = False  # replace an earlier run in ``out`` when not resuming
    seed: int = 0
    progress: bool = True


# ----------------------------------------------------------------------------- set-up
def setup_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def learning_rates(opts: TrainOptions, train_sam: bool) -> dict[str, float]:
    """Per-part LRs: explicit ``opts.lrs`` over the defaults of the mode (pretrained / scratch)."""
    base = {p: SCRATCH_LR for p in LR_PARTS} if train_sam else dict(PRETRAINED_LRS)
    if opts.lr is not None:
        base = {p: float(opts.lr) for p in base}
    for part, lr in opts.lrs.items():
        if part not in LR_PARTS:
            raise ValueError(f"unknown part {part!r} for a learning rate; expected one of {LR_PARTS}")
        if lr is not None:
            base[part] = float(lr)
    for part, lr in base.items():
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the learning rate of {part} must be a finite number > 0, got {lr}")
    return base


def build_optimizer(model, lrs: dict[str, float], weight_decay: float) -> torch.optim.AdamW:
    """AdamW with one parameter group per trainable part (its name kept for logging)."""
    groups = []
    for name, module in model.part_modules().items():
        params = [p for p in module.parameters() if p.requires_grad]
        if params and name in lrs:
            groups.append({"params": params, "lr": lrs[name], "base_lr": lrs[name], "name": name})
    if not groups:
        raise ValueError("nothing to train: every part of the model is frozen")
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def progress(step: int, seconds: float, opts: TrainOptions) -> float:
    """Fraction of the run done: by steps, or by wall time when ``max_minutes`` ends it sooner.

    A time budget makes a CPU run on a shared machine finish its schedule on time whatever the
    load (at the cost of bit-exact reproducibility of the step count).
    """
    done = step / max(1, opts.steps)
    if opts.max_minutes:
        done = max(done, seconds / (60.0 * opts.max_minutes))
    return min(1.0, done)


def lr_factor(step: int, done: float, opts: TrainOptions) -> float:
    """Linear warm-up over ``opts.warmup`` steps, then constant (the paper) or cosine decay to 1%."""
    if opts.warmup and step < opts.warmup:
        return (step + 1) / opts.warmup
    if opts.schedule == "cosine":
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * done))
    return 1.0


def _resized_model(model, opts: TrainOptions, device: torch.device):
    """A fresh model of the preset with another native encoder input size (saved in its config).

    [ours] For clips smaller than the preset's input (the 128-px synthetic clips vs tiny's 256),
    training at the clips' own size costs ~4x less and loses no information; the weights file
    records the size, so every user of the model runs it at that size.
    """
    from .modeling.refsam import RefSAM
    from .modeling.resolution import check_image_size

    if opts.weights or opts.sam_checkpoint:
        raise ValueError("--image-size changes a fresh model's input size; it cannot be combined with "
                         "--weights or --sam-checkpoint (their position embeddings are fixed)")
    size = check_image_size(opts.image_size, model.config.sam.patch_size)
    config = dataclasses.replace(model.config, sam=dataclasses.replace(model.config.sam, image_size=size))
    resized = RefSAM(config, model.text_encoder)
    if getattr(model, "fast_attention", False):
        resized.enable_fast_attention()  # same results, less time (as load_refsam's fresh model)
    return resized.to(device)


# ----------------------------------------------------------------------------- loop
def _allreduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over ranks in one flat buffer; a missing gradient counts as zeros."""
    import torch.distributed as dist

    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def train(opts: TrainOptions, model=None) -> dict:
    """Run training; returns {"step", "loss_first", "loss_last", "out", "seconds", "model"}.

    model: an already built RefSAM to train in place (its text encoder is used); default: built
    from ``opts`` (preset / weights / SAM checkpoint / text encoder).
    """
    from torch.utils.data import DistributedSampler

    from .weights import load_refsam, resolve_device

    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    rank, world = setup_distributed(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    out = Path(opts.out)
    ckpt = out / "checkpoint.pt"
    # The disk is checked first: a refused --out or a damaged checkpoint costs no model building.
    check_run_folder(out, opts)
    saved = read_checkpoint(ckpt) if opts.resume and ckpt.is_file() else None
    if world > 1:  # every rank has looked before rank 0 writes the first file
        import torch.distributed as dist

        dist.barrier()
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    random.seed(opts.seed)
    if model is None:
        model = load_refsam(opts.weights, preset=None if opts.weights else opts.preset,
                            sam_checkpoint=opts.sam_checkpoint, text_encoder=opts.text_encoder, device=device)
        model.set_image_size(None)  # train at the weights' native size, not at their recommended one
        default_image_size = model.config.sam.image_size  # without --image-size (a resume compares it)
        if opts.image_size and opts.image_size != default_image_size:
            model = _resized_model(model, opts, device)
    else:
        default_image_size = model.config.sam.image_size
    model = model.to(device)
    if model.text_encoder is None:
        raise ValueError("training needs a text encoder (--text-encoder NAME)")
    train_sam = bool(opts.from_scratch)
    # Exports recommend --inference-image-size, or what the fine-tuned weights recommended.
    run_size = opts.inference_image_size or getattr(model, "inference_image_size", None)
    if run_size:
        from .modeling.resolution import check_image_size

        run_size = check_image_size(run_size, model.config.sam.patch_size)  # refused now, not at load time
    model.freeze_base(train_sam=train_sam)
    model.train()
    lrs = learning_rates(opts, train_sam)
    optimizer = build_optimizer(model, lrs, opts.weight_decay)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    generator = torch.Generator().manual_seed(opts.seed * 1000 + rank)

    if saved is not None:
        check_resume_options(ckpt, saved["options"], opts, default_image_size)
    dataset = build_dataset(opts)  # bad --data is refused before the run folder is made
    # A small export (README: segment --dataset, then train) may hold fewer items than one step;
    # the step shrinks to fit, the same way on a resume (the data offset counts its items).
    batch_size, accum, note = fit_step_to_dataset(len(dataset), world, opts.batch_size, opts.accum)
    if note is not None:
        opts = dataclasses.replace(opts, batch_size=batch_size, accum=accum)
        if rank == 0:
            print(note, file=sys.stderr)
    step, seconds_before = 0, 0.0
    if saved is not None:
        step, seconds_before = restore_checkpoint(ckpt, saved, model, optimizer, generator)
        saved = None  # the whole saved state (model and Adam moments): not kept for the run
        if rank == 0:
            print(f"refsam train: resumed from {ckpt} at step {step}", file=sys.stderr)
    elif opts.resume and rank == 0:
        print(f"refsam train: --resume but no {ckpt}; starting at step 0", file=sys.stderr)

    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=opts.seed, drop_last=True)
    per_step = opts.batch_size * opts.accum
    batches = micro_batches(dataset, step_batches(sampler, per_step, step * per_step), opts.batch_size, opts.accum,
                            opts.workers, pin_memory=device.type == "cuda")
    texts = TextCache(model.text_encoder)
    # bf16 autocast: always on CUDA; on CPU only when asked (about 2x faster with AVX512-BF16).
    use_bf16 = opts.precision == "bf16" or (opts.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    log_path = out / "train_log.csv"
    # Written with the first row, so that a run failing before its first step leaves no file.
    new_log = step == 0 or not log_path.is_file()
    # Folders this run makes; removed again if it ends before writing anything into them.
    made = [p for p in (out, *out.parents) if not p.exists()] if rank == 0 else []
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    bar = None
    if rank == 0 and opts.progress:
        from tqdm import tqdm

        bar = tqdm(total=opts.steps, initial=step, desc="train", mininterval=2.0, file=sys.stderr)
    start_time, window, first_loss, last_loss = time.time() - seconds_before, [], None, None
    done = progress(step, time.time() - start_time, opts)
    try:
        while done < 1.0:
            factor = lr_factor(step, done, opts)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            optimizer.zero_grad(set_to_none=True)
            stats = {"loss": 0.0, "dice": 0.0, "focal": 0.0, "iou": 0.0}
            for k in range(opts.accum):
                batch = next(batches)
                words, word_mask = texts(batch["text"], device)
                with autocast:
                    losses, logits = clip_forward(model, batch["frames"], batch["masks"], words, word_mask,
                                                  opts.prompt_dropout, opts.keyframe_prob, generator,
                                                  clip_of_row=batch["clip"], box_prob=opts.box_prob,
                                                  refine_prob=opts.refine_prob)
                (losses["loss"] / opts.accum).backward()
                with torch.no_grad():
                    pred, gt = logits > 0, batch["masks"].to(logits.device)
                    inter, union = (pred & gt).flatten(1).sum(1), (pred | gt).flatten(1).sum(1)
                    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float))
                for key in ("loss", "dice", "focal"):
                    stats[key] += float(losses[key].detach()) / opts.accum
                stats["iou"] += float(iou.mean()) / opts.accum
            if not all(math.isfinite(v) for v in stats.values()):
                raise TrainingDivergedError(f"step {step + 1}: the loss became {stats['loss']:.4g}; lower the learning "
                                            f"rate (--lr) or check the data; {ckpt} holds the last saved step")
            if world > 1:
                _allreduce_grads(params, world)
            if opts.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, opts.clip_grad)
            optimizer.step()
            step += 1
            elapsed = time.time() - start_time
            done = progress(step, elapsed, opts)
            if world > 1:  # every rank must stop at the same step, so rank 0's clock decides
                import torch.distributed as dist

                flag = torch.tensor([done], dtype=torch.float64)
                dist.broadcast(flag, 0)
                done = float(flag)
            first_loss = stats["loss"] if first_loss is None else first_loss
            last_loss = stats["loss"]
            window.append(stats)
            if rank == 0:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", iou=f"{stats['iou']:.2f}")
                last = done >= 1.0
                if step % opts.log_every == 0 or last:
                    row = {k: sum(s[k] for s in window) / len(window) for k in ("loss", "dice", "focal", "iou")}
                    with open(log_path, "w" if new_log else "a", newline="") as handle:
                        writer = csv.writer(handle)
                        if new_log:
                            writer.writerow(CSV_FIELDS)
                            new_log = False
                        writer.writerow([
                            step, *(f"{row[k]:.5f}" for k in ("loss", "dice", "focal", "iou")),
                            f"{max(g['lr'] for g in optimizer.param_groups):.3g}", f"{elapsed:.1f}"])
                    window = []
                if step % opts.save_every == 0 or last:
                    if not all(bool(torch.isfinite(p).all()) for p in params):  # never save or export NaN weights
                        raise TrainingDivergedError(f"step {step}: the weights became non-finite; lower the learning "
                                                    f"rate (--lr); nothing was saved, {ckpt} holds the last good step")
                    save_checkpoint(ckpt, model, optimizer, step, generator, opts, elapsed)
                    export_weights(model, out / "refsam.safetensors", train_sam, False, step, run_size, opts.sam_checkpoint)
                    if opts.export:
                        export_weights(model, Path(opts.export), train_sam, opts.export_fp16, step, run_size,
                                       opts.sam_checkpoint)
    finally:
        batches.close()  # DataLoader workers go now, not when a traceback holding them is freed
        for folder in made:  # innermost first; rmdir refuses a folder that is not empty
            try:
                folder.rmdir()
            except OSError:
                break

    if bar is not None:
        bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    model.eval()
    return {"step": step, "loss_first": first_loss, "loss_last": last_loss, "out": str(out),
            "seconds": time.time() - start_time, "model": model}
