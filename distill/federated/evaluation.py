"""Server-side evaluation of the global student after every round.

* held-out perplexity: token-weighted, on held-out records the server keeps (never a device's data),
  :func:`distill.fairness.scoring.heldout_perplexity`;
* fairness: :func:`distill.fairness.evaluate_disparity`'s co-occurrence bias on the configured profession
  prompts (one forward pass, no sampling): ``cooccurrence_bias_mean_abs`` = mean over professions of
  |b_g|, b_g = log Σp(female next word) − log Σp(male next word) averaged over profession g's prompts, and its
  signed mean; ``cooccurrence_bias_ci95``, the Student t interval of that mean over the professions (how much
  the figure depends on which professions were asked: an interval, not a training-noise estimate), and
  ``cooccurrence_bias_by_profession`` (b_g), which lets two runs be compared profession by profession
  (:func:`distill.federated.report.compare_bias`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..fairness.scoring import heldout_perplexity
from ..fairness.evaluator import evaluate_disparity
from ..fairness.prompts import PromptSet
from ..fairness.statistics import t_interval


class GlobalEvaluator:
    def __init__(self, model: torch.nn.Module, tokenizer, heldout: list[str], prompts: PromptSet,
                 batch_size: int = 32):
        self.model, self.tokenizer, self.heldout, self.prompts = model, tokenizer, list(heldout), prompts
        self.batch_size = batch_size
        self.last_report: dict[str, Any] | None = None

    def load(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        missing_ok = self.model.load_state_dict(state, strict=False)
        if missing_ok.unexpected_keys:
            raise KeyError(f"unexpected weights {missing_ok.unexpected_keys[:3]}")
        return self.model

    def __call__(self, state: dict[str, torch.Tensor]) -> dict[str, float | None]:
        model = self.load(state)
        out: dict[str, float | None] = {}
        if self.heldout:
            out["perplexity"] = heldout_perplexity(model, self.tokenizer, self.heldout, self.batch_size)
        report = evaluate_disparity(model, self.tokenizer, self.prompts, metrics=("cooccurrence",),
                                    batch_size=self.batch_size, progress=False, model_name="global student")
        self.last_report = report
        out["cooccurrence_bias_mean_abs"] = report.get("cooccurrence_bias_mean_abs")
        out["cooccurrence_bias_mean"] = report.get("cooccurrence_bias_mean")
        by_profession = {r["profession"]: r["cooccurrence_bias"] for r in report.get("per_profession", [])
                         if r.get("cooccurrence_bias") is not None}
        interval = t_interval([abs(b) for b in by_profession.values()]) if by_profession else None
        out["cooccurrence_bias_ci95"] = None if interval is None else [interval[0], interval[1]]
        out["cooccurrence_bias_by_profession"] = by_profession
        out["num_bias_prompts"] = report.get("num_neutral_prompts")
        return out
