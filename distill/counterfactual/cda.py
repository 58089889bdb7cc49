"""Counterfactual data augmentation (CDA) of a text dataset, as a ``datasets`` map.

* ``one_sided``: each example that has a gendered word is replaced by its counterfactual with probability
  ``prob`` (one draw per row from ``numpy.random.default_rng(seed)``, so the result depends only on the
  seed and the row order — not on batching or ``num_proc``).
* ``two_sided``: each example that has a gendered word is kept and followed by its counterfactual. All
  other columns are copied, so a counterfactual row keeps the ``record_id`` of the record it came from
  (differential privacy clips a record and its counterfactual together).
* ``none``: the dataset is returned as is.

Examples without a gendered word are never changed, never duplicated, and only cost one regex scan.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from datasets.fingerprint import Hasher

from ..errors import ConfigError
from .swap import GenderSwapper

#: The counterfactual data augmentation modes (`cda`): none, replace with probability p, or keep both texts.
CDA_MODES = ("none", "one_sided", "two_sided")


def apply_cda(dataset: Dataset, swapper: GenderSwapper, *, mode: str, prob: float = 0.5, seed: int = 0,
              text_column: str = "text", num_proc: int | None = None) -> Dataset:
    """``dataset`` with counterfactual augmentation ``mode`` applied to ``text_column`` (see module doc)."""
    if mode not in CDA_MODES:
        raise ConfigError(f"cda must be one of {', '.join(CDA_MODES)}; got {mode!r}.")
    if mode == "none" or len(dataset) == 0:
        return dataset
    if text_column not in dataset.column_names:
        raise ConfigError(f"CDA: the dataset has no column '{text_column}' (columns: {dataset.column_names}).")
    fingerprint = Hasher.hash([dataset._fingerprint, mode, prob, seed, text_column,
                               swapper.lexicon.pairs, swapper.lexicon.names])

    if mode == "one_sided":
        draws = np.random.default_rng(seed).random(len(dataset))

        def one_sided(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            texts = batch[text_column]
            return {text_column: [swapper.swap(t) if draws[i] < prob else t for t, i in zip(texts, indices)]}

        return dataset.map(one_sided, batched=True, with_indices=True, num_proc=num_proc,
                           new_fingerprint=fingerprint, desc="Counterfactual augmentation (one-sided)")

    def two_sided(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: [] for k in batch}
        for i, text in enumerate(batch[text_column]):
            cf = swapper.swap(text)
            copies = (text, cf) if cf != text else (text,)
            for value in copies:
                for k in batch:
                    out[k].append(value if k == text_column else batch[k][i])
        return out

    return dataset.map(two_sided, batched=True, num_proc=num_proc, new_fingerprint=fingerprint,
                       desc="Counterfactual augmentation (two-sided)")
