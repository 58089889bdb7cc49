"""Exceptions raised for bad user input.

Every error a user can cause by a config, a flag or a file is a :class:`DistillError` (or a subclass)
whose message names the problem and the fix. The CLI prints these as one line and exits non-zero,
without a traceback.
"""


class DistillError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ConfigError(DistillError, ValueError):
    """An invalid configuration value or key."""


class IncompatibleModelsError(DistillError):
    """Teacher and student cannot be distilled together (e.g. different vocabularies)."""


class UnsafeWeightsError(DistillError):
    """Weights in a format that can execute code on load (pickle) were refused."""
