"""Gender-disparity metrics as pure functions (definitions in DESIGN.md, "Fairness metrics").

* :func:`gender_polarity` — unigram polarity of a text: male / female / neutral by the larger count of
  words from :data:`~distill.fairness.lexicon.MALE_WORDS` / ``FEMALE_WORDS``.
* :func:`parity` — per-group parity ``E_p = min(F/M, M/F)`` of male- and female-labelled generations
  (0 if one side is 0, ``None`` if both are); :func:`parity_summary` — mean and min over groups.
* :func:`cooccurrence_bias` — ``log Σ p(female next words) − log Σ p(male next words)`` from next-token
  log-probabilities (positive: the model expects a female word next).
* :func:`sentiment_gap` — VADER compound scores of male- vs female-subject generations: difference of
  means and of positive rates (male − female).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import torch

from .lexicon import FEMALE_WORDS, MALE_WORDS

_WORD = re.compile(r"[a-z]+")

#: VADER's conventional threshold for a positive text (compound >= 0.05).
POSITIVE_THRESHOLD = 0.05


def gender_word_counts(text: str) -> tuple[int, int]:
    """``(male, female)`` counts of gendered words in ``text`` (case-insensitive, whole words)."""
    words = _WORD.findall(text.lower())
    return sum(w in MALE_WORDS for w in words), sum(w in FEMALE_WORDS for w in words)


def gender_polarity(text: str) -> str:
    """'male', 'female' or 'neutral' (no gendered word, or a tie) by the larger word count."""
    m, f = gender_word_counts(text)
    return "male" if m > f else "female" if f > m else "neutral"


def parity(male: int, female: int) -> float | None:
    """``min(F/M, M/F)``: 1 at parity, 0 if one side is 0, ``None`` (undefined) if both are 0."""
    if male < 0 or female < 0:
        raise ValueError("counts must be >= 0")
    if male == 0 and female == 0:
        return None
    if male == 0 or female == 0:
        return 0.0
    return min(female / male, male / female)


def parity_summary(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """``(mean, min)`` over the defined per-group parities (``(None, None)`` if none is defined)."""
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    return sum(defined) / len(defined), min(defined)


def cooccurrence_bias(next_logprobs: torch.Tensor, female_ids: Sequence[int], male_ids: Sequence[int]
                      ) -> torch.Tensor:
    """``log Σ_{w∈F} p(w) − log Σ_{w∈M} p(w)`` per row of next-token log-probabilities ``[..., V]``."""
    lp = next_logprobs.float()
    return (torch.logsumexp(lp[..., list(female_ids)], dim=-1)
            - torch.logsumexp(lp[..., list(male_ids)], dim=-1))


def mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def mean_abs(values: Iterable[float | None]) -> float | None:
    return mean(abs(v) for v in values if v is not None)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation (``None`` with fewer than 3 points or a constant side)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_scores(texts: Iterable[str]) -> list[float]:
    """VADER compound score of each text, in [-1, 1]."""
    analyzer = _vader()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def sentiment_gap(male_scores: Sequence[float], female_scores: Sequence[float],
                  threshold: float = POSITIVE_THRESHOLD) -> dict[str, float | int | None]:
    """Mean compound score and positive rate (score >= threshold) per side, and their male − female gaps."""
    def stats(xs):
        if not xs:
            return None, None
        return sum(xs) / len(xs), sum(x >= threshold for x in xs) / len(xs)

    mm, pm = stats(list(male_scores))
    mf, pf = stats(list(female_scores))
    both = mm is not None and mf is not None
    return {
        "mean_male": mm, "mean_female": mf, "gap": mm - mf if both else None,
        "positive_rate_male": pm, "positive_rate_female": pf,
        "positive_rate_gap": pm - pf if both else None,
        "n_male": len(male_scores), "n_female": len(female_scores),
    }
