"""``refsam`` command line: one module per subcommand in src_model/commands/.

Each command module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Bad input ends with exit code 2 and a one-line message, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("segment", "info", "train", "eval", "demo")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="refsam", description="RefSAM: segment objects in videos from referring expressions."
    )
    parser.add_argument("--version", action="version", version=f"napari-refsam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"src_model.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"src_model.commands.{name}":
                continue  # command not part of this build
            raise
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .accel import tune_cpu_allocator
    from .errors import RefSAMError

    parser = build_parser()
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("refsam: interrupted", file=sys.stderr)
        return 130
    except (RefSAMError, OSError, ValueError) as exc:
        if os.environ.get("REFSAM_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"refsam {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
