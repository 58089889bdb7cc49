"""Gender-bias evaluation of causal LMs, in metric families: generation (prompts, co-occurrence, parity,
sentiment, representation/association), intrinsic (CEAT, prediction sensitivity) and downstream (pronoun
resolution, minimal pairs); batched evaluation, reports, a training callback, and one Hugging Face
``evaluate`` measurement module per metric (:func:`measurement_path`). See :func:`evaluate_disparity`,
:func:`evaluate_suite` and :class:`FairnessCallback`."""

from importlib import resources

from ..errors import DistillError
from .evaluator import METRICS, evaluate_disparity
from .prompts import Prompt, PromptSet, load_prompts
from .report import format_table, write_report

#: The measurement modules shipped in ``distill/fairness/measurements/<name>/<name>.py``.
MEASUREMENTS = ("ceat", "pronoun_resolution", "minimal_pairs", "prediction_sensitivity", "cooccurrence_bias",
                "representation")

__all__ = ["METRICS", "MEASUREMENTS", "evaluate_disparity", "evaluate_suite", "measurement_path", "Prompt",
           "PromptSet", "load_prompts", "format_table", "write_report", "FairnessCallback"]


def measurement_path(name: str) -> str:
    """Folder of a shipped ``evaluate`` measurement: ``evaluate.load(measurement_path("ceat"))`` loads it offline."""
    if name not in MEASUREMENTS:
        raise DistillError(f"Unknown fairness measurement '{name}': choose from {', '.join(MEASUREMENTS)}.")
    return str(resources.files("distill.fairness").joinpath("measurements", name))


def __getattr__(name):
    if name == "FairnessCallback":
        from .callback import FairnessCallback

        return FairnessCallback
    if name == "evaluate_suite":
        from .suite import evaluate_suite

        return evaluate_suite
    raise AttributeError(name)
