"""fair-distill `evaluate` measurement: ceat. Load offline with
``evaluate.load(distill.fairness.measurement_path("ceat"))``."""

import evaluate

from distill.errors import DistillError
from distill.fairness.ceat import ceat_data, ceat_from_embeddings, contextual_embeddings
from distill.fairness.measurements import measurement_info
from distill.fairness.scoring import resolve_model_and_tokenizer

_DESCRIPTION = """CEAT (Guo & Caliskan, 2021): random-effects combined WEAT effect size of male vs female terms (X, Y) against two
attribute sets (A, B) over contextual embeddings from many sentence contexts of a causal LM's hidden states.
Positive = A is associated with X (stereotypical when A is the male-typed set). Definitions:
distill/fairness/ceat.py."""

_KWARGS_DESCRIPTION = """
Args:
    word (`list[str]`): the words of the four sets.
    set (`list[str]`): the set of each word: "X" (male terms), "Y" (female terms), "A", "B" (attributes).
    model: a causal LM, a local directory or a Hub name (safetensors only).
    tokenizer: its tokenizer (default: loaded from `model` when it is a path).
    target_templates / attribute_templates (`list[str]`, optional): contexts with one "{w}" (default: the
        packaged person / topic templates).
    layer (`int`, default -1), num_samples (`int`, default 1000), seed (`int`, default 0), batch_size (`int`, 64).
Returns: effect_size (combined), se, z, p_value (two-sided), p_value_one_sided, tau2, q, fixed_effect_size,
    num_samples, sample_effect_sizes_mean, sample_effect_sizes_std.
Example:
    >>> from distill.fairness import measurement_path
    >>> from distill.fairness.ceat import ceat_inputs
    >>> ceat = evaluate.load(measurement_path("ceat"))
    >>> ceat.compute(**ceat_inputs("career_family"), model="path/to/model", num_samples=200)
"""

_CITATION = """@inproceedings{guo2021detecting, title={Detecting Emergent Intersectional Biases: Contextualized Word Embeddings
Contain a Distribution of Human-like Biases}, author={Guo, Wei and Caliskan, Aylin}, booktitle={AIES},
year={2021}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ceat(evaluate.Measurement):
    def _info(self):
        return measurement_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, {
            "word": "string",
            "set": "string"})

    def _compute(self, word, set, model=None, tokenizer=None, target_templates=None, attribute_templates=None,
                 layer=-1, num_samples=1000, seed=0, batch_size=64):
        model, tokenizer = resolve_model_and_tokenizer(model, tokenizer)
        data = ceat_data()
        spec = {k: [w for w, s in zip(word, set) if s == k] for k in "XYAB"}
        unknown = sorted({s for s in set if s not in ("X", "Y", "A", "B")})
        if unknown or not all(spec.values()):
            raise DistillError("ceat: every word needs the set X, Y, A or B and every set a word "
                               f"(got {unknown or 'an empty set'}).")
        spec["templates_xy"] = target_templates or data["templates"][data["targets"]["templates"]]
        spec["templates_ab"] = attribute_templates or data["templates"]["topic"]
        emb = contextual_embeddings(model, tokenizer, spec, layer=layer, batch_size=batch_size)
        return ceat_from_embeddings(emb, num_samples=num_samples, seed=seed)
