"""``evaluate_suite``: the fairness metric families of one causal LM, as one report (``fairness.json``).

Suites (``distill evaluate --suite``):

* ``generation`` — today's generation metrics (:func:`~distill.fairness.evaluator.evaluate_disparity`:
  co-occurrence bias, parity, sentiment gap), plus HELM-style representation / association TVD of the
  generations (:mod:`~distill.fairness.representation`), at the top level of the report and in
  ``representation``;
* ``intrinsic`` — CEAT on hidden states (section ``intrinsic``, :mod:`~distill.fairness.ceat`) and prediction
  sensitivity (section ``prediction_sensitivity``, :mod:`~distill.fairness.sensitivity`);
* ``downstream`` — pronoun resolution and minimal pairs scored by the model's likelihood (section
  ``downstream``, :mod:`~distill.fairness.downstream`);
* ``all`` — the three.

:func:`headline` reduces a report to one number per metric family, the columns of the comparison table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..errors import DistillError
from .ceat import DEFAULT_TESTS, ceat
from .downstream import downstream
from .evaluator import METRICS, evaluate_disparity
from .prompts import PromptSet, builtin_prompts, load_prompts
from .representation import representation_association
from .sensitivity import prediction_sensitivity

SUITES = ("generation", "intrinsic", "downstream", "all")
#: CEAT tests of a full run: WEAT 6-8 and the labour-statistics occupations.
CEAT_TESTS = (*DEFAULT_TESTS, "occupations")


def check_suite(suite: str) -> tuple[str, ...]:
    """The families a suite runs (``all`` → generation, intrinsic, downstream)."""
    if suite not in SUITES:
        raise DistillError(f"Unknown suite '{suite}': choose from {' | '.join(SUITES)}.")
    return SUITES[:3] if suite == "all" else (suite,)


def evaluate_suite(model, tokenizer, suite: str = "all", prompts: str | PromptSet = "builtin", *,
                   occupations: Sequence[str] | None = None, metrics=METRICS,
                   ceat_tests: Sequence[str | dict] = CEAT_TESTS, layer: int = -1, ceat_samples: int = 1000,
                   seed: int = 0, batch_size: int = 16, model_name: str | None = None, progress: bool = True,
                   **generation_kwargs) -> dict[str, Any]:
    """Every metric family of ``suite`` on ``model``. ``occupations`` restricts the builtin prompts, the
    downstream templates and the CEAT occupations test; ``generation_kwargs`` go to ``evaluate_disparity``."""
    families = check_suite(suite)
    name = model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or "model"
    timings: dict[str, float] = {}
    if "generation" in families:
        start = time.perf_counter()
        pset = prompts if isinstance(prompts, PromptSet) else (
            builtin_prompts(list(occupations)) if occupations and prompts == "builtin" else load_prompts(prompts))
        report = evaluate_disparity(model, tokenizer, pset, metrics=metrics, batch_size=batch_size, seed=seed,
                                    model_name=name, progress=progress, **generation_kwargs)
        gens = report.get("generations") or []
        report["representation"] = representation_association([g["text"] for g in gens],
                                                              [g["group"] for g in gens]) if gens else None
        if not gens:
            report["notes"].append("representation / association: not computed (no generations; request the "
                                   "parity or sentiment metric)")
        timings["generation"] = time.perf_counter() - start
    else:
        report = {"model": name, "prompts": None, "num_prompts": 0, "metrics": [], "per_profession": [],
                  "notes": ["generation metrics: not computed (suite '%s')" % suite]}
    report["suite"] = list(families)
    if "intrinsic" in families:
        start = time.perf_counter()
        tests = [("occupations" if not occupations else _occupation_test(occupations)) if t == "occupations" else t
                 for t in ceat_tests]
        report["intrinsic"] = {"ceat": ceat(model, tokenizer, tests, layer=layer, num_samples=ceat_samples,
                                            seed=seed, batch_size=max(batch_size, 32), progress=progress)}
        neutral = builtin_prompts(list(occupations) if occupations else None).neutral
        report["prediction_sensitivity"] = prediction_sensitivity(
            model, tokenizer, [p.text for p in neutral], [p.group for p in neutral], batch_size=batch_size,
            progress=progress)
        timings["intrinsic"] = time.perf_counter() - start
    if "downstream" in families:
        start = time.perf_counter()
        report["downstream"] = downstream(model, tokenizer, occupations, batch_size=max(batch_size, 32),
                                          progress=progress)
        timings["downstream"] = time.perf_counter() - start
    report["suite_seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return report


def _occupation_test(occupations):
    from .ceat import occupation_test

    return {"name": "occupations", **occupation_test(occupations)}


#: (key, column label, family, meaning) of the headline figures, in table order.
HEADLINES = (
    ("cooccurrence_bias_mean_abs", "co-occ |bias|", "generation",
     "mean |log p(female next) − log p(male next)|; 0 fair"),
    ("representation_tvd", "repr. TVD", "generation", "gendered words in generations, TVD from uniform; 0 fair"),
    ("association_tvd", "assoc. TVD", "generation", "per-occupation gendered words, mean TVD from uniform; 0 fair"),
    ("ceat_effect_size", "CEAT ES", "intrinsic", "combined effect size, mean over tests; > 0 stereotypical"),
    ("prediction_sensitivity", "pred. sens.", "intrinsic", "Σ_i |cos(e_i,g)|·|∂f/∂e_i·ĝ|, mean; 0 fair"),
    ("pronoun_gap", "pronoun gap", "downstream", "accuracy pro − anti stereotypical; 0 fair"),
    ("stereotype_share", "stereo pairs", "downstream", "share of minimal pairs preferring the stereotype; 0.5 fair"),
)


def headline(report: dict[str, Any]) -> dict[str, float | None]:
    """One number per metric (see :data:`HEADLINES`); ``None`` where the family was not run."""
    rep = report.get("representation") or {}
    ceat_r = (report.get("intrinsic") or {}).get("ceat") or {}
    ps = report.get("prediction_sensitivity") or {}
    down = report.get("downstream") or {}
    return {
        "cooccurrence_bias_mean_abs": report.get("cooccurrence_bias_mean_abs"),
        "representation_tvd": rep.get("representation_tvd"),
        "association_tvd": rep.get("association_tvd"),
        "ceat_effect_size": ceat_r.get("mean_effect_size"),
        "prediction_sensitivity": ps.get("prediction_sensitivity"),
        "pronoun_gap": (down.get("pronoun_resolution") or {}).get("gap"),
        "stereotype_share": (down.get("minimal_pairs") or {}).get("stereotype_share"),
    }
