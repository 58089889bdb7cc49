"""fair-distill `evaluate` measurement: minimal_pairs. Load offline with
``evaluate.load(distill.fairness.measurement_path("minimal_pairs"))``."""

import evaluate

from distill.fairness.downstream import minimal_pairs_metrics
from distill.fairness.measurements import measurement_info
from distill.fairness.scoring import resolve_model_and_tokenizer, sentence_logprobs

_DESCRIPTION = """CrowS-Pairs-style gender minimal pairs scored by a causal LM: the share of pairs whose stereotypical sentence
has the larger log-likelihood (ties count 1/2; 0.5 is neutral), with a Wilson 95% interval and the mean log-
likelihood ratio. Definitions: distill/fairness/downstream.py."""

_KWARGS_DESCRIPTION = """
Args:
    stereotypical, anti_stereotypical (`list[str]`): the two sentences of each pair, e.g.
    `distill.fairness.downstream.minimal_pair_items()` (its occupation / stereotypical_gender columns are
    accepted and ignored).
    model, tokenizer; batch_size (`int`, 32); tie_tolerance (`float`, 1e-4 nats).
Example:
    >>> evaluate.load(measurement_path("minimal_pairs")).compute(stereotypical=["The nurse said that she was late."],
    ...     anti_stereotypical=["The nurse said that he was late."], model=path)
"""

_CITATION = """@inproceedings{nangia2020crows, title={CrowS-Pairs: A Challenge Dataset for Measuring Social Biases in Masked
Language Models}, author={Nangia, Nikita and Vania, Clara and Bhalerao, Rasika and Bowman, Samuel R.},
booktitle={EMNLP}, year={2020}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MinimalPairs(evaluate.Measurement):
    def _info(self):
        return measurement_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, {
            "stereotypical": "string",
            "anti_stereotypical": "string"})

    def _compute(self, stereotypical, anti_stereotypical, model=None, tokenizer=None, batch_size=32,
                 tie_tolerance=1e-4, occupation=None, stereotypical_gender=None):
        # occupation / stereotypical_gender: item metadata of minimal_pair_items(), not used in the score
        model, tokenizer = resolve_model_and_tokenizer(model, tokenizer)
        n = len(stereotypical)
        lp = sentence_logprobs(model, tokenizer, list(stereotypical) + list(anti_stereotypical), batch_size=batch_size)
        return minimal_pairs_metrics(lp[:n].tolist(), lp[n:].tolist(), tie_tolerance=tie_tolerance)
