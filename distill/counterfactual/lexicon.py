"""The gendered-word lexicon: pairs of (male, female) words read from tab-separated files.

Built-in files live in ``distill/counterfactual/data/``: ``gender_pairs.tsv`` (pronouns, people, kinship,
titles, roles; always used) and ``first_names.tsv`` (optional, ``names=True``). Users add their own pairs
with a file of ``male<TAB>female`` lines (``cda_pairs_file``); ``#`` starts a comment line. A user pair
replaces any built-in pair that names one of its words.

Each word has one partner, except the pronouns that English makes ambiguous (``his`` -> her/hers,
``her`` -> his/him), which :mod:`distill.counterfactual.swap` resolves by context. The *first* line naming a
word gives its default partner, used where there is no context (e.g. by the token-level permutation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Iterable

from ..errors import ConfigError

PAIRS_FILE = "gender_pairs.tsv"
NAMES_FILE = "first_names.tsv"

#: Words whose partner depends on the context; handled by ``swap.py``, exempt from the one-partner rule.
CONTEXT_RESOLVED = frozenset({"his", "her", "him", "hers"})


def parse_pairs(text: str, source: str) -> list[tuple[str, str]]:
    """``male<TAB>female`` lines -> pairs (lower-cased). Raises :class:`ConfigError` on a malformed line."""
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = [p.strip() for p in line.rstrip("\r\n").split("\t")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"{source}, line {lineno}: expected 'male<TAB>female' (two words separated by one tab), "
                f"got {line!r}. Fix the line or remove it."
            )
        male, female = parts
        for word in (male, female):
            if not all(ch.isalpha() or ch in "'-" for ch in word):
                raise ConfigError(
                    f"{source}, line {lineno}: {word!r} is not a single word (letters, ' and - only)."
                )
        if male.lower() == female.lower():
            raise ConfigError(f"{source}, line {lineno}: a word cannot pair with itself ({male!r}).")
        pairs.append((male.lower(), female.lower()))
    return pairs


def read_pairs_file(path: str) -> list[tuple[str, str]]:
    if not os.path.isfile(path):
        raise ConfigError(f"cda_pairs_file '{path}' does not exist: give a file of 'male<TAB>female' lines.")
    with open(path, encoding="utf-8") as fh:
        return parse_pairs(fh.read(), path)


@lru_cache(maxsize=4)
def _builtin(name: str) -> tuple[tuple[str, str], ...]:
    text = resources.files("distill.counterfactual").joinpath("data", name).read_text(encoding="utf-8")
    return tuple(parse_pairs(text, name))


@dataclass(frozen=True)
class GenderLexicon:
    """An ordered list of (male, female) word pairs and the lookup tables built from it.

    Attributes:
        pairs: the word pairs, in priority order (the built-in pronoun pairs first).
        names: first-name pairs (swapped only in capitalised words), empty unless asked for.
        partner: ``word -> default partner`` for every word (first pair naming it wins).
    """

    pairs: tuple[tuple[str, str], ...]
    names: tuple[tuple[str, str], ...] = ()
    partner: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        table: dict[str, str] = {}
        for group in (self.pairs, self.names):
            for male, female in group:
                table.setdefault(male, female)
                table.setdefault(female, male)
        object.__setattr__(self, "partner", table)

    @property
    def name_words(self) -> frozenset[str]:
        return frozenset(w for pair in self.names for w in pair)

    @property
    def words(self) -> frozenset[str]:
        return frozenset(self.partner)

    def bijective_pairs(self) -> list[tuple[str, str]]:
        """Pairs in which each word has one partner: the first pair naming a word wins (his/her, not his/hers)."""
        used: set[str] = set()
        out = []
        for male, female in (*self.pairs, *self.names):
            if male in used or female in used:
                continue
            used.update((male, female))
            out.append((male, female))
        return out


def _check_one_partner(pairs: Iterable[tuple[str, str]], source: str) -> None:
    seen: dict[str, str] = {}
    for male, female in pairs:
        for word, other in ((male, female), (female, male)):
            if word in CONTEXT_RESOLVED:
                continue
            if word in seen and seen[word] != other:
                raise ConfigError(
                    f"{source}: '{word}' pairs with both '{seen[word]}' and '{other}'. Each word may have one "
                    "partner (only his/her/him/hers are resolved by context): remove one of the lines."
                )
            seen[word] = other


def merge_pairs(base: list[tuple[str, str]], extra: list[tuple[str, str]], source: str
                ) -> list[tuple[str, str]]:
    """``base`` with ``extra`` added; an extra pair replaces the base pairs that name one of its words."""
    _check_one_partner(extra, source)
    extra_words = {w for pair in extra for w in pair}
    kept = [p for p in base if not (set(p) & extra_words)]
    return kept + [p for p in extra if p not in kept]


def load_lexicon(names: bool = False, pairs_file: str | None = None,
                 extra_pairs: tuple[tuple[str, str], ...] = ()) -> GenderLexicon:
    """The built-in lexicon, optionally with first names, a user pair file and extra pairs."""
    pairs = list(_builtin(PAIRS_FILE))
    if pairs_file:
        pairs = merge_pairs(pairs, read_pairs_file(pairs_file), pairs_file)
    if extra_pairs:
        pairs = merge_pairs(pairs, [(m.lower(), f.lower()) for m, f in extra_pairs], "pairs")
    name_pairs: list[tuple[str, str]] = []
    if names:
        words = {w for p in pairs for w in p}
        name_pairs = [p for p in _builtin(NAMES_FILE) if not (set(p) & words)]
    return GenderLexicon(tuple(pairs), tuple(name_pairs))
