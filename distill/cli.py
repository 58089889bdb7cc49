"""The `distill` command line: one subcommand a module in :mod:`distill.commands`.

Each module there defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, extra) -> int``.
Errors a user can cause (:class:`~distill.errors.DistillError`) are printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import __version__, commands
from .errors import DistillError
from .runtime import tune_cpu_allocator


def _command_modules():
    mods = [importlib.import_module(f"{commands.__name__}.{m.name}")
            for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="fair-distill: distil causal LMs that are fair (counterfactual role reversal) and private "
                    "(DP-SGD), evaluate gender disparity, and publish with a model card.",
    )
    parser.add_argument("--version", action="version", version=f"fair-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           add_help=getattr(mod, "ADD_HELP", True),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        modules[mod.NAME] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    tune_cpu_allocator()
    parser, modules = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    mod = modules[args.command]
    if extra and not getattr(mod, "ACCEPTS_EXTRA", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(mod.run(args, extra) or 0)
    except DistillError as exc:
        print(f"distill {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
