"""The ``fastvit`` command: parse arguments, call the library, print.

One module per command group registers its subcommands (``add_commands``): :mod:`.info` (list, info),
:mod:`.batch` (predict, features, embed), :mod:`.export` (export), :mod:`.benchmark` (benchmark), :mod:`.serve`
(serve), :mod:`.train` (train, validate). Optional runtimes (ONNX Runtime, OpenVINO, the server, pyarrow) are
imported inside the commands that need them; torch comes with the package itself.
Every expected failure ends as one line on stderr and a non-zero exit code: 1 for bad input images
(``--strict``, or none readable), 2 for anything else; 130 when interrupted (Ctrl-C), 143 on SIGTERM.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Sequence

from ..errors import FastViTError, ImageLoadError
from . import batch, benchmark, export, info, serve, train
from .common import EXIT_BAD_INPUTS, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, Parser, options_given

COMMAND_GROUPS = (info, batch, export, benchmark, serve, train)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fastvit", description="FastViT image models: classify, extract features, embed, inspect.",
        epilog="Exit codes: 0 success, 1 bad input images (see the command's help), 2 errors, 130 interrupted, "
               "143 terminated (SIGTERM).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the command is, so that it stops as on Ctrl-C: temporary files
    removed, decoding workers stopped, one line said (a job then resumes where it stopped)."""


def _stop(signum, frame):
    """Ctrl-C or SIGTERM: stop where the command is."""
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the fastvit command's own process
        # The ~170k objects of the imports (torch's) live as long as the process: out of the garbage
        # collector's sight, each full collection no longer walks them (60-90 ms each, several per run).
        gc.freeze()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = options_given(parser, sys.argv[1:] if argv is None else argv)
    args.whole_process = argv is None  # run as the fastvit command, so it may set up the process
    if args.whole_process and args.command != "serve":  # the server stops in its own way
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    try:
        return args.run(args) or EXIT_OK
    except ImageLoadError as error:  # only --strict lets a bad file end a run
        print(f"fastvit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUTS
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"fastvit {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    except (FastViTError, ValueError) as error:
        print(f"fastvit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"fastvit {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
