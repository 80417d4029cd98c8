"""``refsam`` command line: one module per subcommand in src_model/commands/.

Each command module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Bad input ends with exit code 2 and a one-line message, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

COMMANDS = ("segment", "info", "train", "eval", "demo")


class _DefaultsShown(argparse.HelpFormatter):
    """Help that names an option's default where it is a fixed value (None or False: worked out
    when the command runs, which its help says) and the help does not name one already."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        fixed = action.option_strings and not (default is None or default is False or default == []
                                               or default is argparse.SUPPRESS)
        if fixed and action.help and "default" not in text:
            text += " (default: %(default)s)"
        return text


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
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=_DefaultsShown)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def _quiet_transformers() -> None:
    """No "Loading weights" bars from transformers: stderr keeps our progress bar and one-line errors."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    from .accel import tune_cpu_allocator
    from .errors import RefSAMError

    parser = build_parser()
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    _quiet_transformers()
    # Warnings (a damaged video, a truncated expression) as one line each, like the errors;
    # restored afterwards, since main() is also called from Python.
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: f"refsam {args.command}: warning: {message}\n"
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
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
