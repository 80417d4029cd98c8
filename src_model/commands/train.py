"""``refsam train``: train or fine-tune RefSAM (see src_model/train.py and src_model/weights/README.md)."""
from __future__ import annotations

HELP = "train RefSAM on a Ref-YouTube-VOS-style folder (or streamed synthetic clips); fine-tune with --weights"

_LR_FLAGS = {"image_encoder": "encoder", "prompt_encoder": "prompt-encoder", "mask_decoder": "decoder",
             "adapters": "adapters", "text_mlp": "mlp", "hda": "hda", "itm": "itm"}


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True,
                        help="dataset folder (Ref-YouTube-VOS layout, e.g. an export) or 'synthetic' to stream generated clips")
    parser.add_argument("--split", default=None, help="split inside --data (train, valid, ...)")
    parser.add_argument("--preset", default="tiny", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--from-scratch", action="store_true",
                        help="no pretrained SAM: train every SAM part too (all LRs default to 3e-4)")
    parser.add_argument("--weights", default=None, help="initial RefSAM weights: 'default' or a .safetensors path")
    parser.add_argument("--sam-checkpoint", default=None, help="official SAM .pth for the frozen SAM parts")
    parser.add_argument("--text-encoder", default=None, help="text encoder name or folder (default MiniLM)")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-time budget: the LR schedule and the run end by then even if --steps is not reached")
    parser.add_argument("--batch-size", type=int, default=2, help="clips per micro-batch (per process)")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per optimiser step")
    parser.add_argument("--num-frames", type=int, default=3, help="frames per training clip")
    parser.add_argument("--objects-per-clip", type=int, default=1,
                        help="train on up to N objects of each clip at once (one expression each): the clip "
                             "is encoded once and the words must tell its objects apart")
    parser.add_argument("--size", type=int, default=None, help="resize clips of --data to SIZE x SIZE")
    parser.add_argument("--image-size", type=int, default=None,
                        help="native encoder input size of a fresh model (default: the preset's; e.g. 128 for 128-px clips)")
    parser.add_argument("--inference-image-size", type=int, default=None,
                        help="encoder input size the exported weights recommend for inference (load_refsam's "
                             "default for them; e.g. 256 for a model trained at 128: finer masks)")
    parser.add_argument("--lr", type=float, default=None, help="one learning rate for every trained part (--lr-* override it)")
    parser.add_argument("--synthetic-size", type=int, default=128, help="side of streamed synthetic clips")
    parser.add_argument("--synthetic-frames", type=int, default=8, help="frames of each streamed synthetic video")
    for part, flag in _LR_FLAGS.items():
        parser.add_argument(f"--lr-{flag}", type=float, default=None, dest=f"lr_{part}",
                            help=f"learning rate of {part} (default: paper value, or 3e-4 with --from-scratch)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clip (0: off)")
    parser.add_argument("--prompt-dropout", type=float, default=0.5,
                        help="probability that a frame t>0 gets the previous GT mask (perturbed) as mask prompt")
    parser.add_argument("--keyframe-prob", type=float, default=0.15,
                        help="probability that frame 0 gets its own GT mask as prompt (keyframe re-init)")
    parser.add_argument("--box-prob", type=float, default=0.0,
                        help="share of objects trained as box / click prompts instead of text (what "
                             "'Add from prompts' and --box use); 0 trains the text path only")
    parser.add_argument("--refine-prob", type=float, default=0.0,
                        help="share of the prompt objects' box / click frames that also get a mask to correct "
                             "as a mask prompt (a near miss, another object's mask, or nothing); SAM-style "
                             "refinement, tried for the bundled model but not used by the engine")
    parser.add_argument("--out", default="runs/refsam", help="folder for checkpoint.pt, refsam.safetensors, train_log.csv")
    parser.add_argument("--export", default=None, help="also write the weights here at every save")
    parser.add_argument("--export-fp16", action="store_true", help="write --export in half precision")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an --out that holds an earlier run (default: refuse), replace --export")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 elsewhere; bf16 also speeds up CPUs with AVX512-BF16")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0,
                        help="data worker processes building batches ahead of the model (0: in the training "
                             "process; on a GPU use several, the synthetic generator needs ~11 ms a clip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args):
    import math

    from ..train import TrainOptions

    for name in ("steps", "batch_size", "accum", "num_frames", "objects_per_clip", "log_every", "save_every",
                 "synthetic_frames", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    # Clips are cut and resized in pixels; the synthetic generator needs 32 a side, and smaller
    # clips of a real dataset hold nothing to learn from.
    for name in ("size", "synthetic_size"):
        if getattr(args, name) is not None and getattr(args, name) < 32:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 32 (pixels a side), got {getattr(args, name)}")
    for name in ("image_size", "inference_image_size"):  # 0 must not quietly mean the default
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive multiple of the patch size, "
                             f"got {getattr(args, name)}")
    for name in ("prompt_dropout", "keyframe_prob", "box_prob", "refine_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.refine_prob > 0 and args.box_prob == 0:
        raise ValueError("--refine-prob trains the prompt objects' corrections; give --box-prob too (e.g. 0.3)")
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        raise ValueError(f"--max-minutes must be a number > 0, got {args.max_minutes}")
    if args.warmup < 0 or not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise ValueError(f"--warmup and --weight-decay must be >= 0, got {args.warmup} and {args.weight_decay}")
    for flag, lr in [("lr", args.lr)] + [(f"lr-{flag}", getattr(args, f"lr_{part}")) for part, flag in _LR_FLAGS.items()]:
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--{flag} must be a finite number > 0, got {lr}")
    if not (math.isfinite(args.clip_grad) and args.clip_grad >= 0):
        raise ValueError(f"--clip-grad must be >= 0 (0: off), got {args.clip_grad}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    return TrainOptions(
        data=args.data, split=args.split, out=args.out, preset=args.preset, weights=args.weights,
        sam_checkpoint=args.sam_checkpoint, text_encoder=args.text_encoder, from_scratch=args.from_scratch,
        steps=args.steps, max_minutes=args.max_minutes, batch_size=args.batch_size, accum=args.accum, num_frames=args.num_frames,
        objects_per_clip=args.objects_per_clip,
        size=args.size, image_size=args.image_size, inference_image_size=args.inference_image_size, lr=args.lr,
        synthetic_size=args.synthetic_size, synthetic_frames=args.synthetic_frames,
        lrs={part: getattr(args, f"lr_{part}") for part in _LR_FLAGS}, weight_decay=args.weight_decay,
        warmup=args.warmup, schedule=args.schedule, clip_grad=args.clip_grad,
        prompt_dropout=args.prompt_dropout, keyframe_prob=args.keyframe_prob, box_prob=args.box_prob,
        refine_prob=args.refine_prob,
        device=args.device, precision=args.precision,
        threads=args.threads, workers=args.workers, log_every=args.log_every, save_every=args.save_every, export=args.export,
        export_fp16=args.export_fp16, resume=args.resume, overwrite=args.overwrite, seed=args.seed, progress=not args.no_progress,
    )


def run(args) -> int:
    from ..train import train

    result = train(options_from_args(args))
    if result["loss_first"] is not None:
        print(f"trained to step {result['step']} in {result['seconds']:.0f} s; "
              f"loss {result['loss_first']:.4f} -> {result['loss_last']:.4f}; outputs in {result['out']}")
    return 0
