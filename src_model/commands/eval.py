"""``refsam eval``: J, F and J&F of a model on a referring-video dataset (see src_model/evaluate.py)."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

HELP = "evaluate J, F, J&F per expression and per object; Ref-DAVIS17 protocol; interactive rounds; submissions"


def add_arguments(parser) -> None:
    from ..evaluate import CORRECTIONS, PROMPTS

    parser.add_argument("--data", required=True, help="dataset folder (Ref-YouTube-VOS layout, or Ref-DAVIS17 with --davis)")
    parser.add_argument("--split", default=None, help="split inside --data (valid, train, ...)")
    parser.add_argument("--model", default="default", help="'default' (the bundled model) or a .safetensors path")
    parser.add_argument("--sam-checkpoint", default=None, help="official SAM .pth when --model holds only RefSAM parts")
    parser.add_argument("--text-encoder", default=None, help="text encoder name or folder (default: the model's own)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="encoder input size (default: the size the weights recommend, 256 for the bundled model; else their native size)")
    parser.add_argument("--interactive", type=int, default=0, metavar="K",
                        help="K rounds of 'replace the worst frame with its ground truth and re-propagate' "
                             "(at most as many as the longest video has frames: then every frame is corrected)")
    parser.add_argument("--correct-with", choices=list(CORRECTIONS), default="mask",
                        help="what each --interactive round puts on the worst frame: its ground-truth mask "
                             "(default, a painted correction), or the model's prediction there from that "
                             "prompt drawn for the ground truth (box, click, ...: 'Correct from prompts'), "
                             "undone when it is no better on its frame, as a user seeing it would")
    parser.add_argument("--prompt", choices=list(PROMPTS), default="text",
                        help="text: every expression (default); the others start every annotated object on "
                             "its first visible frame, without words, from its ground-truth box, one click, "
                             "three clicks, a click plus a negative click on its nearest neighbour, or its box "
                             "plus a negative click on what else the box holds (the SAM prompt path of 'Add "
                             "from prompts' and segment --box)")
    parser.add_argument("--davis", action="store_true", help="Ref-DAVIS17 protocol (4 expression sets averaged)")
    parser.add_argument("--submission", default=None, metavar="OUT.zip",
                        help="also write a Ref-YouTube-VOS submission zip (Annotations/<video>/<exp_id>/<frame>.png)")
    parser.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N videos")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON (no score: null)")
    parser.add_argument("--output", default=None, metavar="OUT.json", help="also write the full result JSON to this file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output or --submission file (never one inside --data)")


def _check_outputs(args) -> None:
    """Refuse an --output/--submission that cannot or must not be written, before the model loads."""
    from ..atomic import OutputExistsError, check_target

    dataset = Path(os.path.realpath(args.data))
    what = {"--output": "a .json file for the result", "--submission": "the .zip file to write"}
    seen = {}
    for flag, name in (("--output", args.output), ("--submission", args.submission)):
        if name is None:
            continue
        target = check_target(name, overwrite=True)  # the folder it goes in exists
        if target.is_dir():  # said first: --overwrite would not help
            raise ValueError(f"{flag} {name} is a folder; name {what[flag]}")
        where = Path(os.path.realpath(target))
        if where == dataset or dataset in where.parents:  # e.g. the dataset's own meta_expressions.json
            raise OutputExistsError(f"{flag} {name} is inside the dataset {args.data}; write it somewhere else")
        if where in seen:
            raise ValueError(f"{seen[where]} and {flag} both name {name}; give them different files")
        seen[where] = flag
        if target.exists() and not args.overwrite:
            raise OutputExistsError(f"{flag} {name} already exists; pass --overwrite to replace it")


def _json_safe(value):
    """NaN/inf (a mean over nothing) -> None: JSON has no NaN, and strict parsers refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run(args) -> int:
    from ..evaluate import check_prompt, evaluate_dataset
    from ..weights import load_refsam

    if args.interactive < 0:
        raise ValueError(f"--interactive must be >= 0, got {args.interactive}")
    if args.max_videos is not None and args.max_videos < 1:
        raise ValueError(f"--max-videos must be >= 1, got {args.max_videos}")
    check_prompt(args.prompt, args.davis, args.submission, args.correct_with, args.interactive)
    _check_outputs(args)  # fail now, not after the whole evaluation
    model = load_refsam(args.model, sam_checkpoint=args.sam_checkpoint, text_encoder=args.text_encoder,
                        device=args.device, image_size=args.image_size)
    result = evaluate_dataset(model, args.data, args.split, davis=args.davis, interactive=args.interactive,
                              submission=args.submission, max_videos=args.max_videos, prompt=args.prompt,
                              correct_with=args.correct_with,
                              progress=not args.json and sys.stderr.isatty())
    result = {"model": str(args.model), "image_size": model.config.sam.image_size, "data": str(args.data),
              "split": args.split, "prompt": args.prompt, "interactive": args.interactive,
              "correct_with": args.correct_with, **result}
    # Only when asked for: the per-expression rows hold per-frame scores.
    text = json.dumps(_json_safe(result), indent=1, allow_nan=False) if args.json or args.output else None
    # The scores are printed before --output is written: a failed write must not lose them.
    if args.json:
        print(text)
    else:
        _print_scores(args, result)
    if args.output:
        from ..atomic import atomic_file

        with atomic_file(args.output, mode="w") as handle:
            handle.write(text + "\n")
        if not args.json:
            print(f"result written to {args.output}")
    return 0


def _print_scores(args, result: dict) -> None:
    scored = "expressions" if args.prompt == "text" else f"objects ({args.prompt} prompts)"
    print(f"{result['num_videos']} videos, {result['num_expressions']} {scored} scored")
    if args.davis and "davis_sets" in result:
        for name, s in result["davis_sets"].items():
            print(f"  {name:<14} J {s['J']:.4f}  F {s['F']:.4f}  J&F {s['J&F']:.4f}")
    if result["num_expressions"]:
        print(f"J {result['J']:.4f}  F {result['F']:.4f}  J&F {result['J&F']:.4f}")
    how = "" if args.correct_with == "mask" else f" from {args.correct_with} prompts"
    for r in result["rounds"][1:]:
        print(f"after {r['round']} correction(s){how}: J {r['J']:.4f}  F {r['F']:.4f}  J&F {r['J&F']:.4f}")
    tried = result["corrections"] + result["rejected_corrections"]
    if args.correct_with != "mask" and tried:
        print(f"{result['rejected_corrections']} of {tried} corrections undone: the mask from the prompt was no "
              "better on its frame")
    done = max(len(result["rounds"]) - 1, 0)
    if result["num_expressions"] and done < args.interactive:
        print(f"--interactive {args.interactive}: only {done} round(s) run: by then every frame of every "
              "video was corrected")
    if args.submission:
        print(f"submission written to {args.submission}")
