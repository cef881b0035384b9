"""The ``rnnfast`` command (also ``python -m rnnfast``): a thin layer over the Python API.

Each subcommand lives in a module of this package with a ``register(subparsers)``
function that adds its parser and sets ``handler`` (a function of the parsed
arguments returning the exit status). :func:`main` turns the errors a user can cause
(bad files, bad values, unreadable checkpoints) into one line on stderr and exit
status 1; argparse reports unknown or malformed options with exit status 2.
"""

import argparse
import os
import sys

from .. import __version__
from . import bench, forecast, text
from ._errors import CLIError

__all__ = ["main", "build_parser", "CLIError"]

SUBCOMMAND_MODULES = (text, forecast, bench)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="rnnfast",
        description="Fast recurrent networks on the CPU: train a character-level "
                    "language model, forecast a time series, benchmark the kernels.",
        epilog="Run 'rnnfast COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"rnnfast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def _describe_error(exc):
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {os.fsdecode(exc.filename)!r}"
    return str(exc) or type(exc).__name__


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from ..io import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print(f"rnnfast {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, CheckpointError, OSError, ValueError, TypeError) as exc:
        if os.environ.get("RNNFAST_TRACEBACK"):
            raise
        print(f"rnnfast {args.command}: error: {_describe_error(exc)}", file=sys.stderr)
        return 1
