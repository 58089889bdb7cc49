"""What a run's (ε, δ) covers and what it does not: the disclosure written into ``privacy.json`` and the model card.

DP-SGD's (ε, δ) bounds how much the *released student weights* (and anything computed from them alone) depend on
one privacy unit of the training data. It says nothing about values released through other channels. This module
states, for one run, as plain data:

* **privacy unit** — one training record, together with every row that shares its ``record_id`` (its two-sided CDA
  counterfactual) and the teacher-perturbation inputs built from its own row; adjacency is add/remove of one unit.
* **frozen parameters** — released unchanged, so they carry whatever their *source* knew. When the student was
  built from the teacher they are copies of the public teacher's; when ``student_model_name_or_path`` gave the
  starting point they are that checkpoint's, and ε covers them only if that checkpoint never saw the private data.
* **outside ε** — the logged training losses (computed on private batches, without noise), validation metrics on
  held-out records, ``trainer_state.json`` and the training logs that hold them, the teacher (public input), the
  number of records (it sets ``q`` and δ and is published), inserted audit canaries.
* **sampling** — Poisson (amplification by subsampling accounted) or shuffled fixed-size batches (no amplification
  claimed: accounted at ``q = 1``).
* **randomness** — secret (OS entropy) or reproducible from the public seed (then a warning: ε does not hold).

:func:`strict_json` makes the summary valid strict JSON (no ``NaN`` / ``Infinity``): a non-finite number becomes
``null`` with a ``<key>_is_infinite`` / ``<key>_is_nan`` flag beside it.
"""

from __future__ import annotations

import math
from typing import Any

PRIVACY_UNIT = ("one training record, together with every row that shares its record_id (its two-sided CDA "
                "counterfactual) and the teacher-perturbation inputs built from its own row; adjacency: add or "
                "remove one such unit")

OUTSIDE_EPSILON = (
    "training-loss values in the logs (loss, loss_kd, loss_lm, ...): computed on private batches without noise",
    "validation metrics (eval_loss, eval_perplexity) computed on held-out private records, without noise",
    "trainer_state.json and any training logs or trackers that hold those values (do not publish them)",
    "the teacher: a public input, not trained here",
    "the number of training records: it sets the sample rate and delta, and privacy.json publishes it",
    "canaries inserted for privacy audits (canary_repeats): k copies form a group of k privacy units",
)


def frozen_disclosure(frozen: list[str], student_source: str | None, teacher: str | None) -> dict[str, Any]:
    """Which parameters were frozen and why they are (or may not be) public."""
    if student_source is None:
        why = (f"copied unchanged from the public teacher ({teacher}) when the student was built and never updated: "
               "they hold no information about the private training data")
        covered = True
    else:
        why = (f"taken unchanged from the starting checkpoint {student_source} (not from the teacher) and never "
               "updated: this run adds no private information to them, but ε does not cover whatever that "
               "checkpoint learnt from its own training data. If it ever saw the private data, the guarantee does "
               "not hold for this model")
        covered = False
    return {"names": list(frozen), "why_public": why, "provably_public": covered}


def sampling_disclosure(poisson: bool, sample_rate: float) -> dict[str, Any]:
    if poisson:
        return {"method": "poisson", "sample_rate": sample_rate, "accounted_sample_rate": sample_rate,
                "assumption": "each step includes every record independently with probability q: epsilon uses "
                              "privacy amplification by Poisson subsampling"}
    return {"method": "shuffled fixed-size batches", "sample_rate": sample_rate, "accounted_sample_rate": 1.0,
            "assumption": "not Poisson-sampled, so no amplification is claimed: every step is accounted as if it "
                          "saw every record (q = 1), a sound but very conservative bound. Use "
                          "dp_poisson_sampling: true for a tighter epsilon"}


def disclosure(*, frozen: list[str], student_source: str | None, teacher: str | None, poisson: bool,
               sample_rate: float, randomness: dict[str, Any], noise_note: str | None = None) -> dict[str, Any]:
    """The ``privacy.json`` fields that say what ε covers (see the module docstring)."""
    out = {"privacy_unit": PRIVACY_UNIT,
           "frozen_parameters": frozen_disclosure(frozen, student_source, teacher),
           "outside_epsilon": list(OUTSIDE_EPSILON),
           "sampling": sampling_disclosure(poisson, sample_rate),
           "randomness": randomness}
    warnings = []
    if randomness.get("warning"):
        warnings.append(randomness["warning"])
    if student_source is not None:
        warnings.append(f"The student started from {student_source}, not from the public teacher: epsilon covers "
                        "only this run's training data.")
    if noise_note:
        warnings.append(noise_note)
    out["warnings"] = warnings
    return out


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (and a flag beside dict entries)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[f"{k}_is_{'nan' if math.isnan(v) else 'infinite'}"] = True
                out[k] = None
            else:
                out[k] = strict_json(v)
        return out
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
