"""Gender-disparity evaluation of causal LMs: prompts, metrics, batched evaluation, reports, and a
training callback. See :func:`evaluate_disparity` and :class:`FairnessCallback`."""

from .evaluator import METRICS, evaluate_disparity
from .prompts import Prompt, PromptSet, load_prompts
from .report import format_table, write_report

__all__ = ["METRICS", "evaluate_disparity", "Prompt", "PromptSet", "load_prompts", "format_table", "write_report",
           "FairnessCallback"]


def __getattr__(name):
    if name == "FairnessCallback":
        from .callback import FairnessCallback

        return FairnessCallback
    raise AttributeError(name)
