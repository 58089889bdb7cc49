"""Secret canaries for privacy audits (Carlini et al., "The Secret Sharer", 2019).

A canary is a random secret in a fixed format — ``"my secret number is 4 8 1 5 9 2"`` — inserted ``k`` times
into the training data (``canary_repeats: k``, ``canary_seed``). Its exposure after training
(:func:`distill.privacy.audit.canary_exposure`) measures how much the model memorised it. Each copy is its
own training record, so DP bounds each copy's influence; ``k`` copies are a group of ``k`` records.
"""

from __future__ import annotations

import random
import re

from datasets import Dataset

CANARY_PREFIX = "my secret number is"
CANARY_DIGITS = 6


def make_canary(seed: int, prefix: str = CANARY_PREFIX, num_digits: int = CANARY_DIGITS) -> str:
    """The canary of ``seed``: ``prefix`` followed by ``num_digits`` random space-separated digits."""
    rng = random.Random(seed)
    return f"{prefix} " + " ".join(str(rng.randrange(10)) for _ in range(num_digits))


def split_canary(canary: str) -> tuple[str, int]:
    """``"my secret number is 4 8 1"`` → (``"my secret number is"``, 3): the format's prefix and digit count."""
    m = re.fullmatch(r"(.*?)((?:\s+\d)+)\s*", canary)
    if not m or not m.group(1).strip():
        raise ValueError(f"A canary must be a text prefix followed by space-separated digits, got {canary!r}.")
    return m.group(1).strip(), len(m.group(2).split())


def random_candidates(prefix: str, num_digits: int, count: int, seed: int = 0, exclude: str | None = None) -> list[str]:
    """``count`` distinct random texts of the canary's format (never ``exclude``)."""
    rng = random.Random(seed)
    space = 10**num_digits
    if count >= space:
        raise ValueError(f"Only {space} secrets of {num_digits} digits exist: ask for fewer than {space} candidates.")
    out: set[str] = set()
    while len(out) < count:
        text = f"{prefix} " + " ".join(rng.choice("0123456789") for _ in range(num_digits))
        if text != exclude:
            out.add(text)
    return sorted(out)


def insert_canary(dataset: Dataset, text_column: str, repeats: int, seed: int) -> tuple[Dataset, str]:
    """Append ``repeats`` copies of the canary of ``seed`` to a raw text dataset (other columns left empty)."""
    canary = make_canary(seed)
    if repeats <= 0:
        return dataset, canary
    rows = {c: [None] * repeats for c in dataset.column_names}
    rows[text_column] = [canary] * repeats
    extra = Dataset.from_dict(rows, features=dataset.features)
    from datasets import concatenate_datasets

    return concatenate_datasets([dataset, extra]), canary
