"""fair-distill `evaluate` measurement: cooccurrence_bias. Load offline with
``evaluate.load(distill.fairness.measurement_path("cooccurrence_bias"))``."""

import evaluate

from distill.fairness.evaluator import cooccurrence_by_prompt
from distill.fairness.measurements import measurement_info
from distill.fairness.metrics import mean, mean_abs
from distill.fairness.scoring import resolve_model_and_tokenizer

_DESCRIPTION = """Next-word co-occurrence bias of a causal LM: log sum p(female next words) - log sum p(male next words) after
each prompt (> 0: a female word is expected), averaged per group; mean and mean absolute value over groups.
Definitions: distill/fairness/metrics.py."""

_KWARGS_DESCRIPTION = """
Args:
    prompt (`list[str]`): gender-neutral prompts; group (`list[str]`): their group (e.g. occupation).
    model, tokenizer; batch_size (`int`, 32).
Returns: cooccurrence_bias_mean, cooccurrence_bias_mean_abs, per_group.
"""

_CITATION = """@inproceedings{bordia2019identifying, title={Identifying and Reducing Gender Bias in Word-Level Language
Models}, author={Bordia, Shikha and Bowman, Samuel R.}, booktitle={NAACL SRW}, year={2019}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CooccurrenceBias(evaluate.Measurement):
    def _info(self):
        return measurement_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, {
            "prompt": "string",
            "group": "string"})

    def _compute(self, prompt, group, model=None, tokenizer=None, batch_size=32):
        model, tokenizer = resolve_model_and_tokenizer(model, tokenizer)
        scores = cooccurrence_by_prompt(model, tokenizer, prompt, batch_size=batch_size).tolist()
        per = {}
        for g, s in zip(group, scores):
            per.setdefault(g, []).append(s)
        per = {g: sum(v) / len(v) for g, v in per.items()}
        return {"cooccurrence_bias_mean": mean(per.values()), "cooccurrence_bias_mean_abs": mean_abs(per.values()),
                "per_group": per}
