r"""Demographic representation and stereotypical association over generations (HELM, Liang et al. 2022).

Both count the project's gendered words (:data:`~distill.fairness.lexicon.MALE_WORDS` /
``FEMALE_WORDS``, lower-cased whole words) in generated texts and compare the distribution over the two
groups with the uniform one by the total variation distance, TVD(p, u) = ½ Σ_g |p_g − ½| = |p_female − ½|:

* **representation**: p over all texts together (0 = as many female as male words, 0.5 = one group only);
* **association**: for each target group (an occupation: the prompt's group), p over the texts about it;
  the reported value is the mean TVD over the groups with at least one gendered word (HELM averages over
  target words the same way), with each group's TVD and signed female share in ``per_group``.

Texts are whatever the model generated; pass the prompt's group with each text (``groups``). Counting a few
words needs no library; the maths is these two lines, kept beside their definitions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..errors import DistillError
from .metrics import gender_word_counts


def tvd_from_uniform(male: int, female: int) -> float | None:
    """TVD between (male, female) shares and (½, ½); ``None`` with no gendered word."""
    total = male + female
    if total == 0:
        return None
    return abs(female / total - 0.5)


def representation_association(texts: Sequence[str], groups: Sequence[str] | None = None) -> dict[str, Any]:
    """Representation TVD over all ``texts`` and, with ``groups``, the mean association TVD over groups."""
    texts = list(texts)
    if groups is not None and len(groups) != len(texts):
        raise DistillError(f"representation/association: {len(texts)} texts but {len(groups)} groups.")
    counts = [gender_word_counts(t) for t in texts]
    male, female = sum(c[0] for c in counts), sum(c[1] for c in counts)
    out: dict[str, Any] = {"num_texts": len(texts), "male_words": male, "female_words": female,
                           "female_share": female / (male + female) if male + female else None,
                           "representation_tvd": tvd_from_uniform(male, female), "association_tvd": None}
    if groups is not None:
        per = defaultdict(lambda: [0, 0])
        for (m, f), g in zip(counts, groups):
            per[g][0] += m
            per[g][1] += f
        rows = {g: {"male_words": m, "female_words": f, "tvd": tvd_from_uniform(m, f),
                    "female_share": f / (m + f) if m + f else None} for g, (m, f) in per.items()}
        defined = [r["tvd"] for r in rows.values() if r["tvd"] is not None]
        out["association_tvd"] = sum(defined) / len(defined) if defined else None
        out["association_groups"] = len(defined)
        out["per_group"] = rows
    return out
