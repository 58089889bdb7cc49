"""fair-distill `evaluate` measurement: representation. Load offline with
``evaluate.load(distill.fairness.measurement_path("representation"))``."""

import evaluate

from distill.fairness.measurements import measurement_info
from distill.fairness.representation import representation_association

_DESCRIPTION = """HELM-style demographic representation and stereotypical association of generated texts: total variation distance
of the male/female gendered-word distribution from uniform, over all texts (representation) and per group,
averaged (association). Needs no model. Definitions: distill/fairness/representation.py."""

_KWARGS_DESCRIPTION = """
Args:
    text (`list[str]`): generated texts; group (`list[str]`): the target group of each (e.g. occupation).
Returns: representation_tvd, association_tvd, female_share, male_words, female_words, per_group.
"""

_CITATION = """@article{liang2022holistic, title={Holistic Evaluation of Language Models}, author={Liang, Percy and others},
journal={arXiv:2211.09110}, year={2022}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Representation(evaluate.Measurement):
    def _info(self):
        return measurement_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, {
            "text": "string",
            "group": "string"})

    def _compute(self, text, group):
        return representation_association(text, group)
