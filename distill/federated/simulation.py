"""Run a federated distillation in Flower's simulation engine and write its outputs.

:func:`run_federated` builds, from a :class:`~distill.distillation.config.DistillationConfig` (the local step) and a
:class:`~distill.federated.config.FederatedConfig`:

* the public teacher and the initial global student (:func:`distill.distillation.models.build_models`, once per
  process: :func:`~distill.federated.local_training.process_models`),
* the training records split over N devices (:class:`~distill.federated.devices.DeviceData`) and the server's
  held-out records (the config's validation split),
* the ServerApp / ClientApp pair of :mod:`distill.federated.app`, with the injected ``local_train``,

runs them with :func:`flwr.simulation.run_simulation` (Ray backend: one actor per ``client_cpus`` cores, each
device's ClientApp runs in an actor; the ServerApp runs in this process), and writes to ``output_dir``: the final
global student (safetensors + tokenizer + ``distill_config.yaml``), ``fl_report.json``, ``fl_rounds.png``,
``fairness.json`` and a model card that says how it was trained.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from ..distillation.config import DistillationConfig
from ..errors import ConfigError
from ..outputs import (CONFIG_FILENAME, FL_PLOT_FILENAME, FL_REPORT_FILENAME, RESULTS_FILENAME, RUN_REPORT_FILES,
                       new_run_id, write_run_id)
from .app import DeviceRecords, LocalTrain, make_client_app, make_server_app
from .config import FederatedConfig
from .devices import DeviceData
from .local_training import process_models, trainable_names
from .report import (
    add_card_section,
    failures,
    format_round,
    plot_rounds,
    write_json,
)

logger = logging.getLogger(__name__)


def load_corpus(args: DistillationConfig, texts: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``(training records, held-out records)`` of the config's data source (validation split as held-out)."""
    from ..text_data import load_raw_datasets

    raw = load_raw_datasets(
        None if texts is not None else args.dataset_name, dataset_config_name=args.dataset_config_name,
        dataset_split=args.dataset_split, train_file=None if texts is not None else args.train_file,
        validation_file=args.validation_file, texts=texts, text_column=args.text_column,
        validation_split_percentage=args.validation_split_percentage, seed=args.seed)
    train = raw["train"][args.text_column]
    if args.max_train_samples is not None:
        train = train[: args.max_train_samples]
    heldout = raw["validation"][args.text_column] if "validation" in raw else []
    if args.max_eval_samples is not None:
        heldout = heldout[: args.max_eval_samples]
    return [str(t) for t in train], [str(t) for t in heldout]


def fairness_prompts(args: DistillationConfig, fl: FederatedConfig):
    from ..fairness.prompts import builtin_prompts, load_prompts

    if fl.eval_occupations:
        return builtin_prompts(list(fl.eval_occupations), args.fairness_max_prompts_per_group)
    return load_prompts(args.fairness_prompts, args.fairness_max_prompts_per_group)


def check_output_dir(out: str, overwrite: bool) -> None:
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ConfigError(f"output_dir '{out}' already exists and is not empty: choose a new --output_dir, or pass "
                          "--overwrite_output_dir true.")


class FederatedRun:
    """A prepared run: the Flower ``server`` and ``client`` apps, and :meth:`finish` to write the outputs once
    the server app returned. The same pair runs in the simulation engine or on a SuperLink and SuperNodes."""

    def __init__(self, args: DistillationConfig, fl: FederatedConfig, local_train: LocalTrain,
                 texts: list[str] | None = None, name: str | None = None,
                 print_fn: Callable[[str], None] = print, engine: str = "simulation",
                 strategy_options: dict[str, float] | None = None):
        from .evaluation import GlobalEvaluator

        check_output_dir(args.output_dir, args.overwrite_output_dir)
        self.args, self.fl, self.name, self.print_fn = args, fl, name, print_fn
        self.engine = engine  # "simulation" (Ray, one machine) or "deployment" (SuperLink + SuperNodes)
        self.seed = seed = args.seed if fl.seed is None else fl.seed
        self.start = time.time()
        torch.manual_seed(seed)
        _, initial_student, self.tokenizer = process_models(args)  # the devices' local step shares them
        student = copy.deepcopy(initial_student)  # the server evaluates the global weights in its own copy
        self.student = student
        self.names = trainable_names(student, args.dp_enabled)
        params = dict(student.named_parameters())
        initial = {n: params[n].detach().clone() for n in self.names}

        train_texts, heldout = load_corpus(args, texts)
        if fl.eval_max_records is not None:
            heldout = heldout[: fl.eval_max_records]
        self.devices = DeviceData(train_texts, fl, seed)
        self.device_summary = self.devices.summary()
        self.evaluator = GlobalEvaluator(student, self.tokenizer, heldout, fairness_prompts(args, fl),
                                         batch_size=args.per_device_eval_batch_size)
        self.label = label = f"[{name}] " if name else ""
        sizes = self.device_summary["sizes"]
        print_fn(f"{label}{fl.num_devices} devices ({fl.partition} partition, sizes {min(sizes)}–{max(sizes)}), "
                 f"{fl.devices_per_round} a round by {fl.selection} selection, {fl.setting} setting, "
                 f"{fl.num_rounds} rounds of {fl.local_steps} local steps")
        self.result: dict[str, Any] = {}

        def on_finish(state: dict[str, torch.Tensor], history: list[dict]) -> None:
            self.result["state"], self.result["history"] = state, history

        self.server = make_server_app(fl, seed, initial, self.evaluator, on_finish,
                                      log_round=lambda e: print_fn(label + format_round(e, fl.num_rounds)),
                                      strategy_options=strategy_options)
        self.client = make_client_app(local_train, DeviceRecords(fl, self.devices))

    def finish(self) -> dict[str, Any]:
        """Write the outputs of a finished run; returns the report."""
        import flwr

        if "history" not in self.result:
            raise ConfigError("The federated run stopped before its last round (see Flower's errors above).")
        args, fl, history = self.args, self.fl, self.result["history"]
        report = {
            "name": self.name, "engine": self.engine, "federated": fl.to_dict(), "seed": self.seed,
            "devices": self.device_summary,
            "local_training": {k: v for k, v in args.distill_dict().items() if k != "output_dir"},
            "local_dp": bool(args.dp_enabled), "trainable_parameters": self.names,
            "rounds": [dict(e) for e in history], "node_ids": sorted({n for e in history for n in e.get("node_ids", [])}),
            "failures": failures(history),
            "final": {k: history[-1].get(k) for k in ("perplexity", "cooccurrence_bias_mean_abs",
                                                      "cooccurrence_bias_ci95", "cooccurrence_bias_mean",
                                                      "num_bias_prompts", "central_epsilon")},
            "flwr_version": flwr.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "runtime_seconds": round(time.time() - self.start, 1),
        }
        if self.engine == "deployment":
            report["devices"] = {**self.device_summary, "source": (
                "the server's own partition of the config's corpus; deployed devices train on their data-file, "
                "whose sizes the server sees only as the per-round held_records")}
        local_eps: dict[int, float] = {}
        for e in history:
            for r in e.get("replied", []):
                if "local_epsilon" in r:
                    local_eps[r["device"]] = local_eps.get(r["device"], 0.0) + r["local_epsilon"]
        if local_eps:
            report["local_epsilon_per_device"] = local_eps  # basic composition over the device's trainings
            report["local_epsilon_max"] = max(local_eps.values())
        # the saved config re-runs one device's local step: max_steps = local_steps
        saved = DistillationConfig(**{**args.distill_dict(), "max_steps": fl.local_steps})
        save_outputs(args.output_dir, saved, self.student, self.tokenizer, self.result["state"], self.evaluator,
                     report)
        if report["failures"]:
            self.print_fn(f"{self.label}{len(report['failures'])} device failure(s); the run went on without them "
                          f"(see 'failures' in {FL_REPORT_FILENAME}).")
        return report


def run_federated(args: DistillationConfig, fl: FederatedConfig, local_train: LocalTrain,
                  texts: list[str] | None = None, name: str | None = None,
                  print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the federated distillation in Flower's simulation engine; returns the report (also in
    ``args.output_dir/fl_report.json``)."""
    from flwr.simulation import run_simulation

    run = FederatedRun(args, fl, local_train, texts=texts, name=name, print_fn=print_fn)
    backend = {"client_resources": {"num_cpus": fl.client_cpus, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.ERROR, "log_to_driver": False,
                             "object_store_memory": 256 * 1024 * 1024}}
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU simulation: silence Ray's GPU tip
    flwr_logger = logging.getLogger("flwr")
    level, propagate = flwr_logger.level, flwr_logger.propagate
    flwr_logger.setLevel(logging.WARNING)  # our per-round lines replace Flower's INFO log
    flwr_logger.propagate = False  # Flower has its own handler: no second copy through the root logger
    try:
        run_simulation(server_app=run.server, client_app=run.client, num_supernodes=fl.num_devices,
                       backend_config=backend)
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.propagate = propagate
    return run.finish()


def save_outputs(out: str, args: DistillationConfig, student: torch.nn.Module, tokenizer, state, evaluator,
                 report: dict) -> None:
    """The final global student (atomically), its fairness report, fl_report.json, the plot, the model card."""
    from ..fairness.report import write_report
    from ..hub import write_model_card

    evaluator.load(state)  # the final global weights (frozen parameters are the initial ones everywhere)
    os.makedirs(out, exist_ok=True)
    for name in RUN_REPORT_FILES:  # an overwritten directory keeps no report of its earlier run
        if os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    write_run_id(out, new_run_id())  # every report written below carries it; the card reads only those
    tmp = tempfile.mkdtemp(prefix=".saving-", dir=out)
    try:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        args.save_yaml(os.path.join(tmp, CONFIG_FILENAME))
        for fname in os.listdir(tmp):
            os.replace(os.path.join(tmp, fname), os.path.join(out, fname))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    final = report["final"]
    write_json({"eval_perplexity": final.get("perplexity")}, os.path.join(out, RESULTS_FILENAME))
    if evaluator.last_report is not None:  # the last evaluation was of the final weights
        write_report(evaluator.last_report, out)
    write_json(report, os.path.join(out, FL_REPORT_FILENAME))
    plot_rounds({report.get("name") or "global student": report["rounds"]}, os.path.join(out, FL_PLOT_FILENAME))
    if write_model_card(out) is not None:
        add_card_section(out)
