"""Counterfactual role reversal (CRR) against gender bias in distillation (Gupta et al., Findings of ACL 2022).

* :mod:`.lexicon` — gendered word pairs (built-in, optional first names, user files)
* :mod:`.swap` — text-level swapping, ``swap_gender(text)``
* :mod:`.cda` — counterfactual data augmentation of a ``datasets.Dataset``
* :mod:`.token_pairs` — single-token pairs of a tokenizer and the vocabulary permutation R
* :mod:`.perturbation` — mean / max / interpolate of the teacher's predictions on x and x̃ (pure functions)

The teacher's perturbed targets for a batch, in one forward pass over x and the swapped rows of x̃, are the
distillation core's (:mod:`distill.distillation.teacher_side`): this package takes plain tensors only.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GenderLexicon": "lexicon", "load_lexicon": "lexicon",
    "GenderSwapper": "swap", "swap_gender": "swap",
    "apply_cda": "cda",
    "gender_token_pairs": "token_pairs", "token_permutation": "token_pairs", "TokenSwapper": "token_pairs",
    "perturb_log_probs": "perturbation", "reverse_roles": "perturbation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
