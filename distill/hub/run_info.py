"""What a trained model directory says about its run: config, architecture, metrics, fairness, privacy.

Everything is read from files in the directory (no model is loaded), so the model card can be written
right after training, after ``distill evaluate`` added a fairness report, or before a push:

* ``distill_config.yaml`` (the training config: every fair-distill key, defaults included, and the Trainer keys
  that describe the run), ``config.json`` (the student architecture),
  ``*.safetensors`` headers (parameter count),
* ``all_results.json`` / ``trainer_state.json`` (``eval_perplexity``, ``fairness/*`` and ``dp/*`` log entries),
* ``fairness.json`` (``distill evaluate``) and ``privacy.json`` (DP-SGD accounting),
* ``fl_report.json`` (a federated run: the card's federated section),
* compute: ``train_runtime``, ``total_flos``, tokens seen from ``trainer_state.json`` / ``train_results.json`` /
  ``all_results.json``; hardware and device count only where a record names them (else "not recorded").

Missing files are normal: each reader returns ``None`` or an empty dict and the card says what was not measured.
So are missing config keys (a run saved by an older version recorded only the keys that differed from the
defaults of its day): the card shows them as unknown rather than guessing today's defaults.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..outputs import (CARD_FILENAME, CONFIG_FILENAME, FAIRNESS_FILENAME, FL_REPORT_FILENAME, MODEL_CONFIG_FILENAME,
                       PRIVACY_FILENAME, RESULTS_FILENAME, RUN_ID_KEY, TRAINER_STATE_FILENAME, read_run_id)

#: The Trainer's file of training metrics (``trainer.save_metrics("train", ...)``).
TRAIN_RESULTS_FILENAME = "train_results.json"
#: Keys of the compute record, looked up in the results files and the last log entries.
COMPUTE_KEYS = ("train_runtime", "total_flos", "num_input_tokens_seen", "train_samples_per_second", "hardware",
                "num_devices", "num_processes", "world_size")

logger = logging.getLogger(__name__)

#: Summary metrics of ``fairness.json`` shown in the card and the model-index: key -> (label, direction).
FAIRNESS_METRICS = {
    "cooccurrence_bias_mean_abs": ("Co-occurrence bias, mean |log P(female) − log P(male)|", "lower is fairer"),
    "mean_parity": ("Gender parity of generations, mean over professions", "1 is parity, higher is fairer"),
    "min_parity": ("Gender parity of generations, worst profession", "1 is parity, higher is fairer"),
    "sentiment_gap": ("Sentiment gap, mean VADER(male) − mean VADER(female)", "0 is no gap"),
}

#: Licenses of well-known teachers, used for the card's ``license`` when the teacher is one of them.
KNOWN_LICENSES = {
    "gpt2": "mit", "gpt2-medium": "mit", "gpt2-large": "mit", "gpt2-xl": "mit",
    "openai-community/gpt2": "mit", "openai-community/gpt2-medium": "mit",
    "openai-community/gpt2-large": "mit", "openai-community/gpt2-xl": "mit",
    "distilgpt2": "apache-2.0", "distilbert/distilgpt2": "apache-2.0",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring %s: it is not valid JSON (%s).", path, exc)
        return None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def is_hub_id(name: str | None) -> bool:
    """True for names that look like Hub repo ids (``gpt2``, ``org/model``), not paths or ``builtin:``."""
    if not name or name.startswith("builtin:") or os.path.isabs(name) or name.startswith("."):
        return False
    if os.path.exists(name):  # a local directory that happens to look like an id
        return False
    return bool(_HUB_ID.match(name)) and ".." not in name


def training_config(model_dir: str) -> dict[str, Any]:
    """The run's config as ``distill_config.yaml`` recorded it (empty when there is none); keys it does not
    hold are unknown, not defaults (see the module docstring)."""
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        logger.warning("Ignoring %s: it is not valid YAML (%s).", path, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}


def count_parameters(model_dir: str) -> int | None:
    """Number of stored parameters, read from the safetensors headers (tied weights are stored once)."""
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(path, framework="pt") as sf:
            for key in sf.keys():
                total += math.prod(sf.get_slice(key).get_shape())
    return total


def last_logged(log_history: list[dict], pattern: re.Pattern) -> tuple[dict[str, float], int | None]:
    """The latest value of every log key matching ``pattern`` (group 1 = metric name) and its step."""
    values: dict[str, float] = {}
    step = None
    for entry in log_history:
        for key, value in entry.items():
            m = pattern.fullmatch(key)
            if m and _finite(value) is not None:
                values[m.group(1)] = float(value)
                step = entry.get("step", step)
    return values, step


@dataclass
class RunInfo:
    """The facts about a trained model directory that the model card reports."""

    model_dir: str
    config: dict[str, Any]
    model_config: dict[str, Any]
    num_parameters: int | None
    perplexity: float | None
    eval_loss: float | None
    fairness: dict[str, Any] | None  # fairness.json as written by `distill evaluate`
    fairness_logged: dict[str, float] = field(default_factory=dict)  # fairness/* from the training callback
    fairness_logged_step: int | None = None
    privacy: dict[str, Any] | None = None  # privacy.json
    dp_logged: dict[str, float] = field(default_factory=dict)  # dp/* from the training logs
    global_step: int | None = None
    files: list[str] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)  # train_runtime, total_flos, hardware, num_devices ...
    fl_report: dict[str, Any] | None = None  # fl_report.json of a federated run
    federated_section: str | None = None  # its markdown, set by the card builder

    # ---- derived facts ----------------------------------------------------------------------------
    @property
    def teacher(self) -> str:
        return str(self.config.get("teacher_model_name_or_path") or "")

    @property
    def dp_enabled(self) -> bool:
        return bool(self.config.get("dp_enabled")) or self.privacy is not None or "epsilon" in self.dp_logged

    @property
    def epsilon(self) -> float | None:
        if self.privacy is not None and _finite(self.privacy.get("epsilon")) is not None:
            return float(self.privacy["epsilon"])
        return self.dp_logged.get("epsilon")

    @property
    def delta(self) -> float | None:
        if self.privacy is not None and _finite(self.privacy.get("delta")) is not None:
            return float(self.privacy["delta"])
        return _finite(self.config.get("dp_delta"))

    @property
    def uses_builtin_data(self) -> bool:
        return str(self.config.get("dataset_name") or "").startswith("builtin:")

    @property
    def uses_builtin_teacher(self) -> bool:
        return self.teacher.startswith("builtin:")

    def fairness_summary(self) -> dict[str, float]:
        """Summary fairness metrics (name -> value): fairness.json first, else the training callback's logs."""
        if self.fairness is not None:
            out = {}
            for key in (*FAIRNESS_METRICS, "cooccurrence_bias_mean", "cooccurrence_share_correlation"):
                value = self.fairness.get(key)
                if isinstance(value, dict):  # sentiment_gap: {gap, positive_rate_gap, mean_male, ...}
                    for sub, name in (("gap", key), ("positive_rate_gap", f"{key}_positive_rate")):
                        if _finite(value.get(sub)) is not None:
                            out[name] = float(value[sub])
                elif _finite(value) is not None:
                    out[key] = float(value)
            return out
        return dict(self.fairness_logged)

    @property
    def license(self) -> str | None:
        if self.teacher in KNOWN_LICENSES:
            return KNOWN_LICENSES[self.teacher]
        teacher_card = os.path.join(self.teacher, CARD_FILENAME) if self.teacher else ""
        if teacher_card and os.path.isfile(teacher_card):
            from huggingface_hub import ModelCard

            try:
                return ModelCard.load(teacher_card, ignore_metadata_errors=True).data.license
            except (OSError, ValueError):
                return None
        return None


def read_compute(history: list[dict], *results: Any) -> dict[str, Any]:
    """What the run recorded about its compute: the results files first, then the latest log entries."""
    out: dict[str, Any] = {}
    for source in (*results, *reversed(history)):
        if not isinstance(source, dict):
            continue
        for key in COMPUTE_KEYS:
            value = source.get(key)
            if key not in out and value is not None and (isinstance(value, str) or _finite(value) is not None):
                out[key] = value
    for alias in ("num_processes", "world_size"):
        if "num_devices" not in out and alias in out:
            out["num_devices"] = out[alias]
    return out


def own_report(model_dir: str, name: str, run_id: str | None) -> Any:
    """The JSON report ``name`` of ``model_dir`` if it belongs to the directory's run: its ``run_id`` is the
    directory's (``distill evaluate`` of the directory stamps it too). A report of another run, or one without an
    id beside a run that has one, is ignored with a warning; a directory without a run id (an older version)
    keeps every report, as before."""
    report = _read_json(os.path.join(model_dir, name))
    if report is None or run_id is None:
        return report
    found = report.get(RUN_ID_KEY) if isinstance(report, dict) else None
    if found == run_id:
        return report
    logger.warning("Ignoring %s: it belongs to %s, not to the run that saved this model (run id %s).",
                   os.path.join(model_dir, name), f"run {found}" if found else "an unidentified run", run_id)
    return None


def read_run(model_dir: str) -> RunInfo:
    """Collect :class:`RunInfo` from the files of ``model_dir``."""
    results = _read_json(os.path.join(model_dir, RESULTS_FILENAME)) or {}
    state = _read_json(os.path.join(model_dir, TRAINER_STATE_FILENAME)) or {}
    history = state.get("log_history", []) if isinstance(state, dict) else []
    perplexity = _finite(results.get("eval_perplexity"))
    eval_loss = _finite(results.get("eval_loss"))
    if perplexity is None:
        logged, _ = last_logged(history, re.compile(r"eval_(perplexity|loss)"))
        perplexity, eval_loss = logged.get("perplexity"), logged.get("loss", eval_loss)
    fairness_logged, fairness_step = last_logged(history, re.compile(r"(?:eval_)?fairness/(.+)"))
    dp_logged, _ = last_logged(history, re.compile(r"(?:eval_)?dp/(.+)"))
    run_id = read_run_id(model_dir)
    fairness = own_report(model_dir, FAIRNESS_FILENAME, run_id)
    privacy = own_report(model_dir, PRIVACY_FILENAME, run_id)
    fl_report = own_report(model_dir, FL_REPORT_FILENAME, run_id)
    train_results = _read_json(os.path.join(model_dir, TRAIN_RESULTS_FILENAME))
    return RunInfo(
        model_dir=model_dir,
        config=training_config(model_dir),
        model_config=_read_json(os.path.join(model_dir, MODEL_CONFIG_FILENAME)) or {},
        num_parameters=count_parameters(model_dir),
        perplexity=perplexity,
        eval_loss=eval_loss,
        fairness=fairness if isinstance(fairness, dict) else None,
        fairness_logged=fairness_logged,
        fairness_logged_step=fairness_step,
        privacy=privacy if isinstance(privacy, dict) else None,
        dp_logged=dp_logged,
        global_step=state.get("global_step") if isinstance(state, dict) else None,
        files=sorted(os.listdir(model_dir)),
        compute=read_compute(history, results, train_results),
        fl_report=fl_report if isinstance(fl_report, dict) else None,
    )
