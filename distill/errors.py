"""Exceptions raised for bad user input, and how a hint names the option that fixes it.

Every error a user can cause by a config, a flag or a file is a :class:`DistillError` (or a subclass)
whose message names the problem and the fix. The CLI prints these as one line and exits with code 2,
without a traceback.

A hint names an option the way the user passes it: ``--allow-pickle`` to ``distill evaluate``,
``--allow_pickle true`` to ``distill train``, ``allow_pickle=True`` in Python. :func:`option_hint` asks the
entry point that is running (the CLI registers each command's parser with :func:`use_option_style`).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

#: ``(dest, value) -> how to pass it``, set by the entry point that runs (None: Python keyword arguments).
_OPTION_STYLE: contextvars.ContextVar[Callable[[str, Any], str] | None] = contextvars.ContextVar(
    "distill_option_style", default=None)


class DistillError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ConfigError(DistillError, ValueError):
    """An invalid configuration value or key."""


class IncompatibleModelsError(DistillError):
    """Teacher and student cannot be distilled together (e.g. different vocabularies)."""


class UnsafeWeightsError(DistillError):
    """Weights in a format that can execute code on load (pickle) were refused."""


def python_style(dest: str, value: Any) -> str:
    """``allow_pickle=True``: how a Python caller passes an option (``value=None``: just its name)."""
    return dest if value is None else f"{dest}={value!r}"


def option_hint(dest: str, value: Any = True) -> str:
    """How the user sets option ``dest`` to ``value`` in the command that is running (for error hints).

    ``value=None`` gives the option's name only (``--out``, ``output_dir``).
    """
    style = _OPTION_STYLE.get()
    return (style or python_style)(dest, value)


@contextlib.contextmanager
def use_option_style(style: Callable[[str, Any], str]) -> Iterator[None]:
    """Spell hints with ``style`` (``(dest, value) -> text``) inside the block."""
    token = _OPTION_STYLE.set(style)
    try:
        yield
    finally:
        _OPTION_STYLE.reset(token)
