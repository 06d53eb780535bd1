"""``ltxv``: the command line. Thin: flags become the :class:`GenerationRequest` the API and the service take, checked
by the same :class:`~ltxv.pipelines.preflight.Preflight` before any weights are read.

Every subcommand lives in a module of this package with a ``register(subparsers)`` function; :data:`COMMANDS` lists
them in ``--help`` order, so a new command (the service's ``serve``/``worker``) is one module and one line here.
Every error a user can cause is one line on stderr and exit status 2; nothing is left behind."""

from __future__ import annotations

from ltxv.runtime.threads import process_defaults

process_defaults()  # before torch loads its OpenMP runtime, which reads them once (ltxv.runtime.threads)

import argparse
import importlib
import logging
import sys

from ltxv import __version__
from ltxv.cli.flags import Parser
from ltxv.cli.generate import output_file
from ltxv.errors import LtxvError
from ltxv.pipelines.presets import DEFAULT_PRESET

__all__ = ["COMMANDS", "DEFAULT_PRESET", "build_parser", "main", "output_file"]

# Modules with a ``register(subparsers) -> None`` adding their subcommand(s); each sets ``run=`` on its parser.
COMMANDS: tuple[str, ...] = ("ltxv.cli.generate", "ltxv.cli.demo", "ltxv.serve.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ltxv", description="LTX-Video inference: text, image and video to video.")
    parser.add_argument("--version", action="version", version=f"ltxv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def _out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, MemoryError | torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``ltxv`` with ``argv`` (default: the process's arguments); returns the exit status: 0, or 2 with one line
    on stderr for any error in the input (flags, files, devices, memory), 130 when interrupted."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a flag error (2, one line: flags.Parser.error)
        return e.code if isinstance(e.code, int) else 2
    args.argv = sys.argv[1:] if argv is None else argv  # what the ranks of `generate --parallel K` run
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")  # no-op if already configured
    logging.getLogger("ltxv").setLevel(logging.INFO)  # what was loaded, the memory estimate, the compile time
    try:
        args.run(args)
    except LtxvError as e:
        print(f"ltxv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ltxv: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not _out_of_memory(e):
            raise  # a bug in ltxv: the traceback is what a report needs
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ltxv: error: out of memory ({first}); try --residency sequential, or fewer frames", file=sys.stderr)
        return 2
    return 0
