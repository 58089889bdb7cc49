"""fair-distill `evaluate` measurement: pronoun_resolution. Load offline with
``evaluate.load(distill.fairness.measurement_path("pronoun_resolution"))``."""

import evaluate

from distill.fairness.downstream import pronoun_resolution_metrics, pronoun_resolution_scores
from distill.fairness.measurements import measurement_info
from distill.fairness.scoring import resolve_model_and_tokenizer

_DESCRIPTION = """Winogender/WinoBias-style pronoun resolution scored by a causal LM's likelihood: each sentence is followed by a
query ('In this sentence, she refers to the') and resolved to the occupation or the participant by log p of
each. Returns accuracy by pronoun gender, pro- vs anti-stereotypical accuracy and their gap (> 0 = stereotyped),
and the per-occupation she-minus-he preference with its correlation with the share of women. Definitions:
distill/fairness/downstream.py."""

_KWARGS_DESCRIPTION = """
Args:
    sentence, query, occupation, participant, pronoun, gender ("male"/"female"), answer ("occupation"/"participant"),
    stereotype ("pro"/"anti"), female_share (percent): one value per item, e.g.
    `distill.fairness.downstream.pronoun_resolution_items()`.
    model, tokenizer: as for the other fair-distill measurements; batch_size (`int`, 32).
Example:
    >>> from distill.fairness.downstream import pronoun_resolution_items
    >>> evaluate.load(measurement_path("pronoun_resolution")).compute(**pronoun_resolution_items(["nurse", "pilot"]), model=path)
"""

_CITATION = """@inproceedings{rudinger2018gender, title={Gender Bias in Coreference Resolution}, author={Rudinger, Rachel and
Naradowsky, Jason and Leonard, Brian and Van Durme, Benjamin}, booktitle={NAACL}, year={2018}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PronounResolution(evaluate.Measurement):
    def _info(self):
        return measurement_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, {
            "sentence": "string",
            "query": "string",
            "occupation": "string",
            "participant": "string",
            "pronoun": "string",
            "gender": "string",
            "answer": "string",
            "stereotype": "string",
            "female_share": "float64"})

    def _compute(self, sentence, query, occupation, participant, pronoun, gender, answer, stereotype, female_share,
                 model=None, tokenizer=None, batch_size=32):
        model, tokenizer = resolve_model_and_tokenizer(model, tokenizer)
        items = {"sentence": sentence, "query": query, "occupation": occupation, "participant": participant,
                 "pronoun": pronoun, "gender": gender, "answer": answer, "stereotype": stereotype,
                 "female_share": female_share}
        margins = pronoun_resolution_scores(model, tokenizer, items, batch_size).tolist()
        return pronoun_resolution_metrics(margins, items)
