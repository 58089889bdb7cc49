"""``FairnessCallback``: fairness metrics of the student at every evaluation, in the Trainer's logs.

Enabled from a config with ``fairness: {enabled: true}`` (keys ``fairness_metrics``, ``fairness_prompts``,
``fairness_num_samples``, ``fairness_max_new_tokens``, ``fairness_max_prompts_per_group``). Metrics are
logged with the prefix ``fairness/`` (e.g. ``fairness/cooccurrence_bias_mean_abs``), so they land in
``trainer_state.json``'s log history and every ``report_to`` backend. Co-occurrence bias is the default: one
forward pass over the prompts, no sampling. ``parity`` and ``sentiment`` generate text and are opt-in.

Several processes: ``on_evaluate`` runs on every process; each evaluates its share of the prompts
(:mod:`distill.fairness.sharding`) and the trainer's ``log`` records the gathered metrics (only the main
process writes them). :func:`write_final_report` is called on every process too; only the main one writes.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer, TrainerCallback

from ..errors import ConfigError, DistillError
from .evaluator import check_metrics, evaluate_disparity
from .prompts import PromptSet, load_prompts

PREFIX = "fairness/"


def scalar_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's summary numbers as flat ``fairness/...`` scalars (missing metrics are left out)."""
    out = {}
    for key in ("cooccurrence_bias_mean_abs", "cooccurrence_bias_mean", "cooccurrence_share_correlation",
                "mean_parity", "min_parity"):
        if report.get(key) is not None:
            out[PREFIX + key] = float(report[key])
    gap = report.get("sentiment_gap")
    if gap:
        for key in ("gap", "positive_rate_gap"):
            if gap.get(key) is not None:
                out[f"{PREFIX}sentiment_{key}"] = float(gap[key])
    return out


class FairnessCallback(TrainerCallback):
    """Compute fairness metrics on the trained model at each evaluation and log them through the trainer.

    Args:
        trainer: the trainer whose model is evaluated and whose ``log`` records the metrics.
        metrics: subset of ``("cooccurrence", "parity", "sentiment")``.
        prompts: a :class:`PromptSet` or a prompt source string (``builtin``, ``bold:FILE``, a file).
        num_samples, max_new_tokens, max_prompts_per_group, batch_size, seed: as in
            :func:`~distill.fairness.evaluate_disparity`.
    """

    def __init__(self, trainer: Trainer, metrics=("cooccurrence",), prompts: str | PromptSet = "builtin",
                 num_samples: int = 1, max_new_tokens: int = 20, max_prompts_per_group: int | None = None,
                 batch_size: int = 16, seed: int = 0):
        try:
            self.metrics = check_metrics(metrics)
            self.prompts = prompts if isinstance(prompts, PromptSet) else load_prompts(prompts,
                                                                                       max_prompts_per_group)
        except DistillError as exc:
            raise ConfigError(f"fairness config: {exc}") from None
        self.trainer = trainer
        self.num_samples, self.max_new_tokens = num_samples, max_new_tokens
        self.batch_size, self.seed = batch_size, seed
        self.last_report: dict[str, Any] | None = None
        self.last_step: int | None = None

    @classmethod
    def from_trainer(cls, trainer: Trainer) -> FairnessCallback:
        """A callback configured from the trainer's ``fairness_*`` config keys."""
        a = trainer.args
        return cls(trainer, metrics=a.fairness_metrics, prompts=a.fairness_prompts,
                   num_samples=a.fairness_num_samples, max_new_tokens=a.fairness_max_new_tokens,
                   max_prompts_per_group=a.fairness_max_prompts_per_group,
                   batch_size=a.per_device_eval_batch_size, seed=a.seed)

    def evaluate(self, metrics=None) -> dict[str, Any]:
        """Run the configured metrics (or ``metrics``) on the trainer's model now; returns the report."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        tokenizer = self.trainer.processing_class
        name = getattr(self.trainer.args, "output_dir", None)
        self.last_report = evaluate_disparity(
            model, tokenizer, self.prompts, metrics=metrics or self.metrics, num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=self.seed, model_name=name,
            progress=False)
        self.last_step = self.trainer.state.global_step
        return self.last_report

    def on_evaluate(self, args, state, control, **kwargs):
        report = self.evaluate()
        logs = scalar_metrics(report)
        if logs:
            # the trainer's own logging path (every process calls it; log_history and the report_to backends)
            self.trainer.log(logs)
        return control


def write_final_report(trainer: Trainer, output_dir: str) -> dict[str, str]:
    """Evaluate the trained model with the trainer's fairness callback and write ``fairness.json`` (+ CSV and
    chart) into ``output_dir``. Call it on every process (the evaluation is split across them); the main
    process writes and gets the paths, the others get ``{}``."""
    from .report import write_report

    callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, FairnessCallback)), None)
    if callback is None:
        callback = FairnessCallback.from_trainer(trainer)
    report = callback.last_report
    if report is None or callback.last_step != trainer.state.global_step:  # not yet on the final weights
        report = callback.evaluate()
    if not trainer.is_world_process_zero():
        return {}
    return write_report(report, output_dir)
