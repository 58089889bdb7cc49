"""Token-level gender swapping: the gendered token pairs of a tokenizer and the vocabulary permutation R.

For every lexicon pair (male, female) and every casing (lower, Capitalised, UPPER), both with and without a
leading space (GPT-2's ``Ġ``), the pair is kept when *both* words are exactly one token of the tokenizer
(``" he"`` -> ``Ġhe`` and ``" she"`` -> ``Ġshe``; ``"SHE"`` is two tokens, so ``HE``/``SHE`` without a space
is not a pair). R swaps the two tokens of each pair and is the identity elsewhere.

R must be a permutation, so a token belongs to at most one pair: the first lexicon pair naming a word wins
(:meth:`GenderLexicon.bijective_pairs`). Hence ``Ġher`` pairs with ``Ġhis`` and ``Ġhim`` and ``Ġhers`` have no
partner in R (the context rule of the text-level swap cannot be applied per token).

:func:`swap_tokens` applies R to ``input_ids`` (a gather, same length by construction) with a word-boundary
guard: a pair token without a leading space is only swapped when it is not glued to a letter of the previous
token, and no pair token is swapped when the next token continues the word with a letter ("he" in "t|he",
"Ġman" in "Ġman|ifold"). Multi-token words and context-resolved pronouns are not swapped at token level.

The pairs come from the teacher's tokenizer, whatever its architecture. :func:`scan_token_pairs` also reports
the candidates it skipped: a word that splits into several tokens (or does not round-trip), a pair whose two
words are one token, and a token already in an earlier pair. :meth:`TokenSwapper.from_tokenizer` logs the
counts and keeps them in ``TokenSwapper.skipped``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .lexicon import GenderLexicon, load_lexicon

logger = logging.getLogger(__name__)


def _casings(word: str) -> list[str]:
    out = []
    for w in (word.lower(), word[:1].upper() + word[1:].lower(), word.upper()):
        if w not in out:
            out.append(w)
    return out


def _single_token(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return None
    if tokenizer.decode(ids) != text:  # normalising tokenizers may not round-trip; skip such tokens
        return None
    return ids[0]


@dataclass
class TokenPairScan:
    """The token pairs of a tokenizer and the candidates (``(male_text, female_text)``) skipped, by reason."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    multi_token: list[tuple[str, str]] = field(default_factory=list)  # a word is several tokens (or no round trip)
    same_token: list[tuple[str, str]] = field(default_factory=list)  # both words are one token id
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # a token is already in an earlier pair

    @property
    def skipped(self) -> dict[str, int]:
        return {"multi_token": len(self.multi_token), "same_token": len(self.same_token),
                "conflicts": len(self.conflicts)}

    def summary(self) -> str:
        s = self.skipped
        return (f"{len(self.pairs)} gendered token pairs; skipped {sum(s.values())} candidates "
                f"({s['multi_token']} with a word of several tokens, {s['same_token']} of one token, "
                f"{s['conflicts']} with a token already paired)")


def scan_token_pairs(tokenizer, lexicon: GenderLexicon | None = None) -> TokenPairScan:
    """Every lexicon pair x casing x (leading space or not), kept as a token pair or recorded as skipped."""
    lexicon = lexicon or load_lexicon()
    used: set[int] = set()
    scan = TokenPairScan()
    for male, female in lexicon.bijective_pairs():
        for m_case, f_case in zip(_casings(male), _casings(female)):
            for prefix in (" ", ""):
                words = (prefix + m_case, prefix + f_case)
                m_id = _single_token(tokenizer, words[0])
                f_id = _single_token(tokenizer, words[1])
                if m_id is None or f_id is None:
                    scan.multi_token.append(words)
                elif m_id == f_id:
                    scan.same_token.append(words)
                elif m_id in used or f_id in used:
                    scan.conflicts.append(words)
                else:
                    used.update((m_id, f_id))
                    scan.pairs.append((m_id, f_id))
    return scan


def gender_token_pairs(tokenizer, lexicon: GenderLexicon | None = None) -> list[tuple[int, int]]:
    """``(male_id, female_id)`` pairs of single tokens, each casing, with and without a leading space.

    Each token id occurs in at most one pair, so the pairs define a permutation (see module doc). The
    skipped candidates: :func:`scan_token_pairs`.
    """
    return scan_token_pairs(tokenizer, lexicon).pairs


def token_permutation(pairs: list[tuple[int, int]], vocab_size: int) -> torch.LongTensor:
    """The vocabulary permutation R: ``perm[a] = b`` and ``perm[b] = a`` for each pair; identity elsewhere."""
    perm = torch.arange(vocab_size, dtype=torch.long)
    for a, b in pairs:
        if perm[a] != a or perm[b] != b:
            raise ValueError(f"token {a} or {b} is in two pairs: R would not be a permutation.")
        perm[a], perm[b] = b, a
    return perm


@dataclass
class TokenSwapper:
    """R plus the per-token tables of the word-boundary guard, as tensors (move them with :meth:`to`)."""

    perm: torch.LongTensor  # [V] the permutation R
    starts_with_letter: torch.BoolTensor  # [V] decoded token begins with a letter (no leading space)
    ends_with_letter: torch.BoolTensor  # [V] decoded token ends with a letter
    skipped: dict[str, int] = field(default_factory=dict)  # skipped candidates by reason (TokenPairScan.skipped)

    @property
    def gendered_ids(self) -> torch.LongTensor:
        """The token ids that R moves (both sides of every pair), sorted."""
        if getattr(self, "_gendered", None) is None or self._gendered.device != self.perm.device:
            self._gendered = (self.perm != torch.arange(len(self.perm), device=self.perm.device)).nonzero()[:, 0]
        return self._gendered

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int | None = None,
                       lexicon: GenderLexicon | None = None) -> "TokenSwapper":
        vocab_size = vocab_size or len(tokenizer)
        scan = scan_token_pairs(tokenizer, lexicon)
        logger.info("Token-level role reversal: %s.", scan.summary())
        perm = token_permutation(scan.pairs, vocab_size)
        n = min(len(tokenizer), vocab_size)
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        starts = torch.zeros(vocab_size, dtype=torch.bool)
        ends = torch.zeros(vocab_size, dtype=torch.bool)
        starts[:n] = torch.tensor([t[:1].isalpha() for t in texts])
        ends[:n] = torch.tensor([t[-1:].isalpha() for t in texts])
        return cls(perm, starts, ends, scan.skipped)

    def to(self, device) -> "TokenSwapper":
        return TokenSwapper(self.perm.to(device), self.starts_with_letter.to(device),
                            self.ends_with_letter.to(device), dict(self.skipped))

    @property
    def num_pairs(self) -> int:
        return len(self.gendered_ids) // 2

    def swap_tokens(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """x̃: ``input_ids`` ``[B, T]`` with each whole-word gendered token replaced by its partner under R."""
        swapped = self.perm[input_ids]
        change = swapped != input_ids
        if input_ids.size(-1) > 1:
            prev_glued = self.ends_with_letter[input_ids[:, :-1]] & self.starts_with_letter[input_ids[:, 1:]]
            change[:, 1:] &= ~prev_glued  # e.g. "t" + "he": not the pronoun
            next_glued = self.starts_with_letter[input_ids[:, 1:]]
            change[:, :-1] &= ~next_glued  # e.g. "Ġman" + "ifold": the word goes on
        return torch.where(change, swapped, input_ids)
