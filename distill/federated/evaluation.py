"""Server-side evaluation of the global student after every round.

* held-out perplexity: token-weighted, on held-out records the server keeps (never a device's data),
  :func:`distill.fairness.scoring.heldout_perplexity`;
* fairness: :func:`distill.fairness.evaluate_disparity`'s co-occurrence bias on the configured profession
  prompts (one forward pass, no sampling): ``cooccurrence_bias_mean_abs`` = mean over professions of
  |log Σp(female next word) − log Σp(male next word)|, and its signed mean.
"""

from __future__ import annotations

from typing import Any

import torch

from ..fairness.scoring import heldout_perplexity
from ..fairness.evaluator import evaluate_disparity
from ..fairness.prompts import PromptSet


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
        return out
