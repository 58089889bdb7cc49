"""fair-distill `evaluate` measurement: prediction_sensitivity. Load offline with
``evaluate.load(distill.fairness.measurement_path("prediction_sensitivity"))``."""

import evaluate

from distill.fairness.measurements import measurement_info
from distill.fairness.scoring import resolve_model_and_tokenizer
from distill.fairness.sensitivity import prediction_sensitivity

_DESCRIPTION = """Prediction sensitivity (Krishna et al., 2022) for a causal LM: PS(x) = sum_i |cos(e_i, g)| * |<d f(x)/d e_i,
g_hat>| with f the log-odds of a female vs male next word and g the mean female-minus-male embedding difference
of the gendered token pairs; the mean over prompts (0 = the prediction does not follow gender-encoding input
features). Definitions: distill/fairness/sensitivity.py."""

_KWARGS_DESCRIPTION = """
Args:
    prompt (`list[str]`): gender-neutral prompts; group (`list[str]`): their group (e.g. occupation).
    model, tokenizer; batch_size (`int`, 32).
Returns: prediction_sensitivity, directional_sensitivity, mean_log_odds, num_prompts, per_group.
"""

_CITATION = """@inproceedings{krishna2022measuring, title={Measuring Fairness of Text Classifiers via Prediction Sensitivity},
author={Krishna, Satyapriya and Gupta, Rahul and Verma, Apurv and Dhamala, Jwala and Pruksachatkun, Yada and
Chang, Kai-Wei}, booktitle={ACL}, year={2022}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PredictionSensitivity(evaluate.Measurement):
    def _info(self):
        return measurement_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, {
            "prompt": "string",
            "group": "string"})

    def _compute(self, prompt, group, model=None, tokenizer=None, batch_size=32):
        model, tokenizer = resolve_model_and_tokenizer(model, tokenizer)
        return prediction_sensitivity(model, tokenizer, prompt, group, batch_size=batch_size)
