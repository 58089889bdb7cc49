"""The `distill` command line: one subcommand a module in :mod:`distill.commands` (listed in :data:`COMMANDS`).

Each module there defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, extra) -> int``.
Errors a user can cause (:class:`~distill.errors.DistillError`) and bad flags are printed as one line, exit
code 2, on the main process only (every process of an ``accelerate launch`` run raises the same error).
Every ``--long-option`` is accepted with dashes or underscores (``--max-new-tokens`` = ``--max_new_tokens``),
and error hints spell an option the way the running command takes it. A command that returns (or stops with a
``DistillError``) destroys the process group of a multi-process launch (:func:`~distill.runtime.end_process_group`).

One convention across the commands: the output directory is ``--output_dir`` (older spellings are hidden aliases,
:func:`add_deprecated_alias`, that warn once); a boolean option is a bare ``--flag`` (true) or ``--flag true|false``
(:class:`BoolAction`, as `distill train` takes its config keys); every option has a help line; a module may set
``USAGE`` for the usage line of a command whose flags are config keys.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .errors import DistillError, use_option_style
from .runtime import end_process_group, tune_cpu_allocator

#: Subcommand modules of :mod:`distill.commands`, in the order `distill --help` lists them.
COMMANDS = ("demo", "train", "federated", "cache_teacher", "evaluate", "counterfactual", "audit", "card", "push",
            "tiny_teacher")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_bool(value: str) -> bool:
    """``true|yes|on|1`` or ``false|no|off|0`` (any case), the words `distill train` takes for its config keys."""
    word = str(value).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class BoolAction(argparse.Action):
    """A boolean option: a bare ``--flag`` means true, ``--flag true|false`` (or ``--flag=false``) sets it.

    :meth:`CommandParser.parse_known_args` joins ``--flag WORD`` into ``--flag=WORD`` when WORD is a boolean word
    and a bare ``--flag`` into ``--flag=true``, so the option never swallows a positional argument after it."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None, metavar=None):
        super().__init__(option_strings, dest, nargs="?", const=True, default=default, type=parse_bool,
                         required=required, help=help, metavar=metavar or "true|false")

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True if values is None else values)


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: sets the new option's ``dest`` and warns once on stderr."""

    def __init__(self, option_strings, dest, new_option: str = "", **kwargs):
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kwargs)
        self.new_option = new_option

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        warned = getattr(namespace, "_deprecated_warned", set())
        if option_string not in warned:
            warned.add(option_string)
            setattr(namespace, "_deprecated_warned", warned)
            print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed in the next release: "
                  f"use {self.new_option}", file=sys.stderr)


def add_deprecated_alias(parser, old: str, new: str, dest: str | None = None, **kwargs) -> None:
    """Accept ``old`` (e.g. ``--out``) for option ``new`` (e.g. ``--output_dir``) for one more release: hidden
    from ``--help``, one warning line on stderr when used."""
    parser.add_argument(old, dest=dest or new.lstrip("-").replace("-", "_"), action=DeprecatedAlias, new_option=new,
                        default=argparse.SUPPRESS, **kwargs)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes each long option with dashes or underscores and errs in one line."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        bools = {name for action in self._actions if isinstance(action, BoolAction) for name in action.option_strings}
        if bools:
            joined, i = [], 0
            while i < len(args):
                token = args[i]
                i += 1
                if token == "--":
                    joined += [token, *args[i:]]
                    break
                if token in bools:
                    if i < len(args) and args[i].strip().lower() in _TRUE + _FALSE:
                        token, i = f"{token}={args[i]}", i + 1
                    else:
                        token = f"{token}=true"
                joined.append(token)
            args = joined
        namespace, extra = super().parse_known_args(args, namespace)
        if hasattr(namespace, "_deprecated_warned"):
            delattr(namespace, "_deprecated_warned")
        return namespace, extra

    def add_argument(self, *names, **kwargs):
        extra = []
        for name in names:
            if name.startswith("--"):
                for alt in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
                    if alt not in names and alt not in extra:
                        extra.append(alt)
        return super().add_argument(*names, *extra, **kwargs)

    def error(self, message):
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)

    def option_style(self, dest: str, value) -> str:
        """How this command takes option ``dest`` (for error hints): ``--allow-pickle``, ``--out DIR``."""
        for action in self._actions:
            if action.dest == dest and action.option_strings:
                name = action.option_strings[0]
                if isinstance(action, BoolAction) and isinstance(value, bool):
                    return name if value else f"{name} false"
                return name if value is None or action.nargs == 0 else f"{name} {value}"
        return f"--{dest.replace('_', '-')}" + ("" if value is None else f" {value}")


class number:
    """An argparse ``type=`` that parses an int or float and checks its declared range, e.g.
    ``number(int, min=1)``, ``number(float, min=0, min_open=True, max=1)``; ``number(int)`` declares that any
    integer is valid. Every numeric option of every command uses it (a test walks the parsers), so an
    out-of-range value is one line naming the option before any work: ``argument --top-p: must be in (0, 1]``.
    """

    def __init__(self, kind: type = int, *, min: float | None = None, max: float | None = None,
                 min_open: bool = False, max_open: bool = False):
        if kind not in (int, float):
            raise TypeError("number() parses int or float")
        self.kind, self.min, self.max, self.min_open, self.max_open = kind, min, max, min_open, max_open
        self.__name__ = kind.__name__  # argparse: "invalid int value: 'x'"

    def describe(self) -> str:
        """The range as text: ``[1, inf)``, ``(0, 1]``."""
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return (f"{'(' if self.min_open or self.min is None else '['}{lo}, {hi}"
                f"{')' if self.max_open or self.max is None else ']'}")

    def __repr__(self) -> str:
        return f"number({self.kind.__name__}, {self.describe()})"

    def __call__(self, text: str):
        value = self.kind(text)  # ValueError -> argparse: "invalid int value: 'x'"
        if self.kind is float and value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
        low_bad = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high_bad = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        if low_bad or high_bad:
            kind = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind} in {self.describe()} (got {text})")
        return value


def config_option_style(dest: str, value) -> str:
    """How `distill train` takes config key ``dest``: ``--allow_pickle true``."""
    if value is None:
        return f"--{dest}"
    return f"--{dest} {str(value).lower() if isinstance(value, bool) else value}"


def _command_modules():
    return [importlib.import_module(f"{__package__}.commands.{name}") for name in COMMANDS]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = CommandParser(
        prog="distill",
        description="fair-distill: distil causal LMs that are fair (counterfactual role reversal) and private "
                    "(DP-SGD), evaluate gender disparity, and publish with a model card.",
    )
    parser.add_argument("--version", action="version", version=f"fair-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    modules, parsers = {}, {}
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           add_help=getattr(mod, "ADD_HELP", True), usage=getattr(mod, "USAGE", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        modules[mod.NAME] = mod
        parsers[mod.NAME] = p
    parser.command_parsers = parsers
    return parser, modules


def is_main_process() -> bool:
    """False on the non-zero ranks of a multi-process launch (torchrun / accelerate set RANK)."""
    return os.environ.get("RANK", "0") in ("", "0")


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
    sub = parser.command_parsers[args.command]
    if extra and not getattr(mod, "ACCEPTS_EXTRA", False):
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    style = config_option_style if getattr(mod, "ACCEPTS_EXTRA", False) else sub.option_style
    try:
        with use_option_style(style):
            code = int(mod.run(args, extra) or 0)
    except DistillError as exc:
        if is_main_process():
            print(f"distill {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # output piped into `head`
        code = 0
    except KeyboardInterrupt:  # not after an interrupt: a collective cut short would make destroying wait for it
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130
    end_process_group()  # under `accelerate launch`: before interpreter shutdown, which may abort on a live group
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
