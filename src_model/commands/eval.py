"""``refsam eval``: J, F and J&F of a model on a referring-video dataset (see src_model/evaluate.py)."""
from __future__ import annotations

import json
import sys

HELP = "evaluate J, F, J&F per expression and per object; Ref-DAVIS17 protocol; interactive rounds; submissions"


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder (Ref-YouTube-VOS layout, or Ref-DAVIS17 with --davis)")
    parser.add_argument("--split", default=None, help="split inside --data (valid, train, ...)")
    parser.add_argument("--model", default="default", help="'default' (the bundled model) or a .safetensors path")
    parser.add_argument("--sam-checkpoint", default=None, help="official SAM .pth when --model holds only RefSAM parts")
    parser.add_argument("--text-encoder", default=None, help="text encoder name or folder (default: the model's own)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="encoder input size (default: the size the weights recommend, 256 for the bundled model; else their native size)")
    parser.add_argument("--interactive", type=int, default=0, metavar="K",
                        help="K rounds of 'replace the worst frame with its ground truth and re-propagate'")
    parser.add_argument("--davis", action="store_true", help="Ref-DAVIS17 protocol (4 expression sets averaged)")
    parser.add_argument("--submission", default=None, metavar="OUT.zip",
                        help="also write a Ref-YouTube-VOS submission zip (Annotations/<video>/<exp_id>/<frame>.png)")
    parser.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N videos")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--output", default=None, help="also write the full result JSON to this file")


def run(args) -> int:
    from ..atomic import check_target
    from ..evaluate import evaluate_dataset
    from ..weights import load_refsam

    if args.interactive < 0:
        raise ValueError(f"--interactive must be >= 0, got {args.interactive}")
    if args.max_videos is not None and args.max_videos < 1:
        raise ValueError(f"--max-videos must be >= 1, got {args.max_videos}")
    for flag, target in (("--output", args.output), ("--submission", args.submission)):
        if target is not None:
            check_target(target, overwrite=True)  # its folder exists: fail now, not after the whole evaluation
    model = load_refsam(args.model, sam_checkpoint=args.sam_checkpoint, text_encoder=args.text_encoder,
                        device=args.device, image_size=args.image_size)
    result = evaluate_dataset(model, args.data, args.split, davis=args.davis, interactive=args.interactive,
                              submission=args.submission, max_videos=args.max_videos,
                              progress=not args.json and sys.stderr.isatty())
    result = {"model": str(args.model), "image_size": model.config.sam.image_size, "data": str(args.data),
              "split": args.split, **result}
    if args.output:
        from ..atomic import atomic_file

        with atomic_file(args.output, mode="w") as handle:
            json.dump(result, handle, indent=1)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['num_videos']} videos, {result['num_expressions']} expressions scored")
    if args.davis and "davis_sets" in result:
        for name, s in result["davis_sets"].items():
            print(f"  {name:<14} J {s['J']:.4f}  F {s['F']:.4f}  J&F {s['J&F']:.4f}")
    if result["num_expressions"]:
        print(f"J {result['J']:.4f}  F {result['F']:.4f}  J&F {result['J&F']:.4f}")
    for r in result["rounds"][1:]:
        print(f"after {r['round']} correction(s): J {r['J']:.4f}  F {r['F']:.4f}  J&F {r['J&F']:.4f}")
    if args.submission:
        print(f"submission written to {args.submission}")
    return 0
