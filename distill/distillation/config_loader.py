"""Loading a config dataclass from YAML files and ``--key value`` flags, checked against its declared fields.

Nothing here knows a particular config: every function takes the dataclass. :mod:`distill.distillation.config`
binds :func:`load` to :class:`~distill.distillation.config.DistillationConfig`; ``distill federated`` passes its
``federated:`` section's dataclass as an extra section.

Sources, lowest to highest precedence: the dataclass defaults, each ``--config FILE`` in the order given (a later
file wins key by key), ``--key value`` flags, then ``overrides`` from Python. In a file, ``flat_sections`` such as
``dp: {enabled: true}`` are flattened to ``dp_enabled: true``; ``sections`` (``federated: {...}``) are loaded into
their own dataclass. A flag is spelled with dashes or underscores (``--max-steps`` = ``--max_steps``); a flag
naming a key of an extra section sets that section's key.

Validation comes from the declared fields (:func:`check_fields`): the annotation gives the type (``int``,
``float``, ``bool``, ``str``, ``Literal[...]`` choices, ``list[...]``, ``X | None`` and unions of these) and
``metadata={"range": "[1, inf)"}`` the allowed interval, written once as ``[lo, hi]`` with ``(`` / ``)`` for an
open end. Values from YAML or the command line are converted by the same declared types, so a wrong value is one
:class:`~distill.errors.ConfigError` naming the file or the command line, the key and the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from typing import Any, Literal

import yaml

from ..errors import ConfigError

_NULLS = ("none", "null", "~")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


# ---------------------------------------------------------------------------------------------------
# declared types and ranges
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """``{name: resolved annotation}`` of every init field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def field_map(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval ``[lo, hi]`` of a numeric field; ``lo_open`` / ``hi_open`` exclude the end."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return bool(above and below)

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``."""
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo == -math.inf:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


_RANGE = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\]\s)]+)\s*([\])])\s*$")


@functools.lru_cache(maxsize=None)
def parse_range(text: str) -> Range:
    """``"[1, inf)"`` -> :class:`Range` (``inf`` / ``-inf`` for an unbounded end)."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"bad range {text!r}: write it as [lo, hi], (lo, hi), [lo, inf) ...")
    lo_b, lo, hi, hi_b = match.groups()
    return Range(float(lo), float(hi), lo_b == "(", hi_b == ")")


def field_range(f: dataclasses.Field) -> Range | None:
    text = f.metadata.get("range")
    return parse_range(text) if text else None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _members(tp) -> tuple:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


def _supported(tp) -> bool:
    """Whether :func:`coerce` understands ``tp`` (other types, such as enums and dicts, pass through)."""
    if tp in (int, float, bool, str, type(None)):
        return True
    origin = typing.get_origin(tp)
    if origin is Literal:
        return True
    if origin is list:
        args = typing.get_args(tp)
        return not args or _supported(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return all(_supported(m) for m in typing.get_args(tp))
    return False


def describe_type(tp) -> str:
    """``an integer``, ``a number``, ``true or false``, ``one of a, b``, ``a list of integers``."""
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(tp))
    if origin is list:
        args = typing.get_args(tp)
        inner = describe_type(args[0]) if args else "values"
        return "a list of " + re.sub(r"^an? ", "", inner).replace("integer", "integers").replace("number", "numbers")
    members = [m for m in _members(tp) if m is not type(None)]
    text = " or ".join(describe_type(m) for m in members)
    return text + (" (or null)" if len(members) < len(_members(tp)) else "")


def metavar(tp) -> str:
    """How `--help` shows the value of a flag: ``INT``, ``FLOAT``, ``{a,b}``, ``INT [INT ...]``."""
    members = [m for m in _members(tp) if m is not type(None)]
    parts = []
    for m in members:
        origin = typing.get_origin(m)
        if origin is Literal:
            parts.append("{" + ",".join(str(c) for c in typing.get_args(m)) + "}")
        elif origin is list:
            args = typing.get_args(m)
            inner = metavar(args[0]) if args else "VALUE"
            parts.append(f"{inner} [{inner} ...]")
        elif m in (int, float, bool, str):
            parts.append({int: "INT", float: "FLOAT", bool: "BOOL", str: "STR"}[m])
        else:
            parts.append("VALUE")
    return "|".join(dict.fromkeys(parts)) or "VALUE"


class _Bad(Exception):
    pass


def _convert(tp, value):
    """``value`` as type ``tp`` (strings from YAML or the command line are parsed); raise :class:`_Bad`."""
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULLS):
            return None
        raise _Bad
    if value is None:
        if type(None) in _members(tp):
            return None
        raise _Bad
    origin = typing.get_origin(tp)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice or (isinstance(value, str) and not isinstance(choice, str) and value == str(choice)):
                return choice
        raise _Bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _Bad
    if tp in (int, float):  # a bool is not a number here; an int key takes a float only when it is whole
        if isinstance(value, bool):
            raise _Bad
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                raise _Bad from None
        if tp is float and isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Bad
    if origin is list:
        args = typing.get_args(tp)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_convert(args[0], v) for v in items] if args else list(items)
    members = _members(tp)
    if len(members) > 1:
        # an exact match first (a YAML 3 for `int | float` stays an int), then conversions in declared order
        nullable = type(None) in members
        if value is None and nullable:
            return None
        ordered = sorted((m for m in members if m is not type(None)),
                         key=lambda m: 0 if typing.get_origin(m) is Literal else 1)
        for m in ordered:
            if m in (int, float, bool, str) and type(value) is m:
                return value
        for m in ordered:
            try:
                return _convert(m, value)
            except _Bad:
                continue
        if nullable and isinstance(value, str) and value.strip().lower() in _NULLS:
            return None
        raise _Bad
    return value


def coerce(tp, value, key: str):
    """``value`` converted to the declared type ``tp`` of ``key``; one :class:`ConfigError` if it is not one."""
    if not _supported(tp):
        return value
    try:
        return _convert(tp, value)
    except _Bad:
        raise ConfigError(f"{key} must be {describe_type(tp)}, got {value!r}.") from None


def check_fields(obj, names=None, prefix: str = "") -> None:
    """Convert and check the fields ``names`` (default: all) of dataclass ``obj`` by their declared type,
    ``Literal`` choices and ``metadata["range"]``; the error names ``prefix + name``, the value and the range."""
    cls = type(obj)
    hints, fields = field_types(cls), field_map(cls)
    for name in (names if names is not None else hints):
        tp, value = hints[name], getattr(obj, name)
        key = prefix + name
        converted = coerce(tp, value, key)
        if converted is not value:
            setattr(obj, name, converted)
        bounds = field_range(fields[name])
        if bounds is None or converted is None or isinstance(converted, (str, bool)):
            continue
        integer = all(m is int or typing.get_origin(m) is Literal or m is type(None) for m in _members(tp))
        finite = integer or math.isfinite(converted)
        if not (finite and converted in bounds):
            kind = "an integer" if integer else "a finite number"
            hint = fields[name].metadata.get("range_hint")
            raise ConfigError(f"{key} must be {kind} {bounds.describe()}, got {converted!r}"
                              + (f" ({hint})." if hint else "."))


# ---------------------------------------------------------------------------------------------------
# YAML files and flags
# ---------------------------------------------------------------------------------------------------
def read_yaml_file(path: str) -> dict[str, Any]:
    """The mapping in YAML file ``path``; a syntax error is one line ``FILE: line N: problem``."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file '{path}' does not exist. Pass an existing YAML file to --config.")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}" if mark else "syntax"
            what = (exc.problem or "invalid YAML") + (f" at column {mark.column + 1}" if mark else "")
            context = ""
            if exc.context:
                started = exc.context_mark
                context = exc.context + (f" started on line {started.line + 1}" if started else "") + "; "
            raise ConfigError(f"{path}: {where}: {what} ({context}not valid YAML: fix the syntax there).") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value pairs, not a {type(raw).__name__}.")
    return raw


def check_keys(keys, known, source: str, what: str = "key", help_hint: str = "") -> None:
    """Raise one :class:`ConfigError` naming every unknown key and its closest valid keys."""
    known = list(known)
    problems = []
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(f"'{key}'{hint}")
    if problems:
        raise ConfigError(f"{source}: unknown {what}{'s' if len(problems) > 1 else ''} {'; '.join(problems)}."
                          + (f" {help_hint}" if help_hint else ""))


def parse_flags(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``(config files, {key: raw value})`` from ``--key value``, ``--key=value``, ``--key v1 v2`` and a bare
    ``--flag`` (``True``). Dashes in a key become underscores; a repeated flag keeps its last value."""
    configs: list[str] = []
    flags: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"command line: unexpected argument {token!r}: config keys are passed as --key value.")
        name, eq, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        i += 1
        if eq:
            values = [inline]
        else:
            values = []
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        if name == "config":
            if len(values) != 1 or not values[0]:
                raise ConfigError("--config needs one file path: --config FILE (give --config again for more files).")
            configs.append(values[0])
            continue
        flags[name] = True if not values else values[0] if len(values) == 1 else values
    return configs, flags


def _field_value(tp, raw, key: str, source: str):
    try:
        return coerce(tp, raw, key)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def split_sections(raw: dict[str, Any], cls: type, source: str, flat_sections, sections) -> tuple[dict, dict]:
    """Flat keys of ``cls`` and ``{section: {key: value}}`` of a YAML mapping (or overrides dict)."""
    hints = field_types(cls)
    flat: dict[str, Any] = {}
    extra: dict[str, dict] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key in sections:
            extra[key] = dict(value)
        elif isinstance(value, dict) and key in flat_sections:
            for sub, sub_value in value.items():
                flat[f"{key}_{sub}"] = sub_value
        elif key in sections:
            raise ConfigError(f"{source}: '{key}:' must be a section of key: value pairs.")
        elif isinstance(value, dict) and not (key in hints and not _supported(hints[key])):
            names = ", ".join(tuple(flat_sections) + tuple(sections))
            raise ConfigError(f"{source}: section '{key}:' is not known. Sections are {names}; other keys must be "
                              "flat (key: value).")
        else:
            flat[key] = value
    return flat, extra


def load(cls: type, config_paths=None, cli_args=None, overrides=None, *, flat_sections=(), sections=None,
         help_hint: str = "") -> tuple[Any, dict[str, Any]]:
    """``(cls instance, {section: section instance})`` from YAML files, flags and overrides (see the module doc).

    ``config_paths``: a path or a list of paths (merged in order, later wins; ``--config FILE`` in ``cli_args``
    come after them). ``sections``: ``{name: dataclass}`` of the extra YAML sections (``federated:``), each
    checked against its own declared fields. ``overrides`` may use sections too; they beat everything.
    """
    sections = dict(sections or {})
    known = list(field_types(cls))
    paths = [config_paths] if isinstance(config_paths, str) else list(config_paths or [])
    cli_paths, flags = parse_flags(list(cli_args or []))
    values: dict[str, Any] = {}
    extra: dict[str, dict] = {name: {} for name in sections}

    def merge(raw: dict, source: str) -> None:
        flat, parts = split_sections(raw, cls, source, flat_sections, sections)
        check_keys(flat, known, source, help_hint=help_hint)
        hints = field_types(cls)
        values.update({k: _field_value(hints[k], v, k, source) for k, v in flat.items()})
        for name, part in parts.items():
            sec_hints = field_types(sections[name])
            check_keys(part, sec_hints, source, what=f"{name} key", help_hint=f"Known: {', '.join(sec_hints)}.")
            extra[name].update({k: _field_value(sec_hints[k], v, f"{name}.{k}", source) for k, v in part.items()})

    for path in paths + cli_paths:
        merge(read_yaml_file(path), path)
    # a flag names a key of an extra section or of cls (dashes were mapped to underscores)
    owner = {k: name for name, sec in sections.items() for k in field_types(sec)}
    main_flags = {}
    for key, raw in flags.items():
        if key in owner:
            name = owner[key]
            extra[name][key] = _field_value(field_types(sections[name])[key], raw, f"{name}.{key}", "command line")
        else:
            main_flags[key] = raw
    check_keys(main_flags, known + list(owner), "command line", help_hint=help_hint)
    merge(main_flags, "command line")
    if overrides:
        merge(overrides, "overrides")
    built = _build(cls, values)
    return built, {name: _build(sections[name], extra[name]) for name in sections}


def _build(cls: type, values: dict[str, Any]):
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # the dataclass' own validation (TrainingArguments)
        raise ConfigError(" ".join(str(exc).split())) from None


# ---------------------------------------------------------------------------------------------------
# --help
# ---------------------------------------------------------------------------------------------------
def format_help(cls: type, *, prog: str, usage: str, description: str, groups: list[tuple[str, list[str]]]) -> str:
    """The key reference of ``cls``: one ``--help`` section per ``(title, field names)`` of ``groups``, with
    each key's type, default, range and help (``--config`` heads the first group)."""
    parser = argparse.ArgumentParser(prog=prog, usage=usage, description=description, add_help=False)
    hints, fields = field_types(cls), field_map(cls)
    for index, (title, names) in enumerate(groups):
        group = parser.add_argument_group(title)
        if index == 0:
            group.add_argument("--config", metavar="FILE",
                               help="YAML file of config keys. Give it several times to merge files in order (a "
                                    "later file wins key by key); --key value flags override the files.")
        for name in names:
            f = fields[name]
            text = f.metadata.get("help", "")
            bounds = field_range(f)
            if bounds is not None:
                text += f" Range: {bounds.describe()}."
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            default = getattr(default, "value", default)
            if "default" not in text.lower():
                text += f" (default: {default})"
            group.add_argument(f"--{name}", metavar=metavar(hints[name]), help=text.replace("%", "%%"))
    return parser.format_help()
