"""Text-level gender swapping: ``swap_gender("He thanked his sister.") == "She thanked her brother."``.

Rules:

* **Whole words only.** A word is a maximal run of word characters (``\\w``); only words in the lexicon
  change ("the", "Hershey", "mankind" never do). Everything between words — punctuation, whitespace,
  apostrophes, unicode — is copied byte-for-byte, so possessives and contractions follow the word
  ("John's", "king's" -> "queen's", "he'll" -> "she'll").
* **Case-preserving.** lower -> lower, Capitalised -> Capitalised, UPPER -> UPPER (he/He/HE -> she/She/SHE);
  words in any other casing ("hE") are left alone.
* **First names** (``names=True``) swap only in capitalised words, so "will" or "mark" stay.
* **Ambiguous pronouns, by a next-word rule.** Look at the next word (after whitespace only; a
  punctuation mark or the end of the text means "no next word"):

  - *her* -> *his* when a word follows that is not in :data:`FUNCTION_WORDS` (determiner use: "her car",
    "her own", "her 3 cats"); otherwise -> *him* (object use: "I saw her.", "gave her the book",
    "asked her to stay").
  - *his* -> *her* when a word follows that is not in :data:`FUNCTION_WORDS` ("his car"); otherwise ->
    *hers* (standalone: "the book is his.", "his and mine").
  - *hers* -> *his*, *him* -> *her*.

  The rule is a heuristic over a small closed-class word list (no tagger); it is right on the common
  patterns above and can be wrong when a content word follows an object pronoun ("told her John left").

On text without *his/her/him/hers* the swap is an involution: ``swap(swap(t)) == t``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .lexicon import GenderLexicon, load_lexicon

#: Closed-class words that can follow an object pronoun or a standalone possessive (articles, prepositions,
#: particles, conjunctions, pronouns, auxiliaries, a few adverbs). A word after her/his that is *not* in
#: this list is taken to be the noun phrase the pronoun determines.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no all both another such what which whose
to in on at by for from with about into onto over under after before since until till of off out up down
through across around behind near like than as without against along among between during toward towards
upon within beyond beside besides via per away back again too also so
and or but nor if when while because although though unless whether then yet once
i you he she it we they me him us them my your our their its mine yours ours theirs who whom where why how
there here
is was are were be been being am has have had do does did will would can could shall should may might must
not never always often sometimes now today tonight yesterday tomorrow later soon already
anyway instead alone together either neither enough
""".split())

_NEXT_WORD = re.compile(r"\s*(\w+)")

#: ambiguous pronoun -> (partner before a noun phrase, partner otherwise)
CONTEXT_RULES = {"her": ("his", "him"), "his": ("her", "hers")}


def match_case(source: str, target: str) -> str:
    """``target`` (lower case) in the casing of ``source``: lower, Capitalised or UPPER."""
    if len(source) > 1 and source.isupper():
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


class GenderSwapper:
    """Swaps the gendered words of a :class:`~distill.counterfactual.lexicon.GenderLexicon` in text."""

    def __init__(self, lexicon: GenderLexicon):
        self.lexicon = lexicon
        self._partner = lexicon.partner
        self._names = lexicon.name_words
        self._context = {w: c for w, c in CONTEXT_RULES.items()
                         if w in self._partner and all(x in self._partner for x in c)}
        words = sorted(self._partner, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)

    def _noun_follows(self, text: str, end: int) -> bool:
        m = _NEXT_WORD.match(text, end)
        return m is not None and m.group(1).lower() not in FUNCTION_WORDS

    def swap(self, text: str) -> str:
        """The counterfactual of ``text`` (unchanged when it has no gendered word)."""
        if not text:
            return text

        def replace(m: re.Match) -> str:
            word = m.group(0)
            key = word.lower()
            if match_case(word, key) != word:  # not lower/Capitalised/UPPER ("hE", unicode case folds)
                return word
            if key in self._context:
                before_noun, otherwise = self._context[key]
                target = before_noun if self._noun_follows(text, m.end()) else otherwise
            elif key in self._names and not word[:1].isupper():
                return word
            else:
                target = self._partner.get(key)
                if target is None:  # e.g. a unicode case-folding match that is not a lexicon word
                    return word
            return match_case(word, target)

        return self._pattern.sub(replace, text)

    __call__ = swap

    def is_gendered(self, text: str) -> bool:
        """Whether ``text`` has a word this swapper would change."""
        return self.swap(text) != text


@lru_cache(maxsize=8)
def default_swapper(names: bool = False, pairs_file: str | None = None) -> GenderSwapper:
    return GenderSwapper(load_lexicon(names=names, pairs_file=pairs_file))


def swap_gender(text: str, *, names: bool = False, pairs=None) -> str:
    """Gender-swapped ``text``: he <-> she, his <-> her/hers, man <-> woman, Mr <-> Mrs, ... (see module doc).

    Args:
        text: any string (empty and non-English text come back unchanged).
        names: also swap first names (John <-> Mary, ...); off by default.
        pairs: extra word pairs: a path to a ``male<TAB>female`` file, a list of ``(male, female)``
            tuples, or a :class:`GenderLexicon` to use instead of the built-in one.
    """
    if isinstance(pairs, GenderLexicon):
        return GenderSwapper(pairs).swap(text)
    if pairs is None or isinstance(pairs, str):
        return default_swapper(names, pairs).swap(text)
    return GenderSwapper(load_lexicon(names=names, extra_pairs=tuple(tuple(p) for p in pairs))).swap(text)
