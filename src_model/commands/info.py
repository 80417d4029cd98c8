"""``refsam info``: parameter accounting per component."""
from __future__ import annotations

import json

HELP = "count total, frozen and trainable parameters per component"


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--text-dim", type=int, default=384,
                        help="text feature size (384 MiniLM, 768 BERT/RoBERTa-base, 1024 T5-large/RoBERTa-large)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from ..accounting import count_parameters, info_model

    if args.text_dim <= 1:
        raise ValueError(f"--text-dim must be at least 2, got {args.text_dim}")
    result = count_parameters(info_model(args.preset, args.text_dim))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"RefSAM {args.preset}, text features {args.text_dim}-d")
    print(f"{'component':<16}{'total':>14}{'trainable':>14}{'frozen':>14}")
    for name, c in result["components"].items():
        print(f"{name:<16}{c['total']:>14,}{c['trainable']:>14,}{c['frozen']:>14,}")
    print(f"{'all':<16}{result['total_parameters']:>14,}{result['trainable_parameters']:>14,}"
          f"{result['frozen_parameters']:>14,}")
    print(f"SAM parameters: {result['sam_parameters']:,}")
    if "paper_trainable_parameters" in result:
        paper = result["paper_trainable_parameters"]
        print(f"paper's trainable count: {paper / 1e6:.1f} M "
              f"(ours {100 * (result['trainable_parameters'] / paper - 1):+.1f}%)")
    return 0
