"""`distill federated --config FILE [--compare] [--key value ...]`: federated distillation on Flower.

The YAML is a `distill train` config (the local step every selected device runs) plus a ``federated:`` section
(:class:`~distill.federated.config.FederatedConfig`). Flags override either: ``--num_rounds 5`` sets a federated
key, ``--learning_rate 1e-3`` a training key. This module provides the local-training callable
(:class:`LocalDistillation`, which runs :class:`~distill.DistillationTrainer` through
:func:`distill.distillation.train.build_trainer`) and injects it into the Flower apps of :mod:`distill.federated`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile

from ..outputs import FL_COMPARE_FILENAME, FL_COMPARE_PLOT, PRIVACY_FILENAME

NAME = "federated"
HELP = ("Federated distillation on Flower: devices keep their data, the server selects K of N devices a round "
        "(uniform or by activity) and averages their students (static or continual setting, optional DP).")
DESCRIPTION = HELP + """

The config is a `distill train` YAML plus a `federated:` section (num_devices, devices_per_round, num_rounds,
local_steps, partition, partition_alpha, partition_attribute, selection, activity_exponent, setting, storage,
central_dp, ...). Flags override keys of either part: --num_rounds 5 --learning_rate 1e-3.
--compare runs uniform vs activity selection x static vs continual setting and writes one table and one plot.
Writes OUTPUT_DIR/fl_report.json, fl_rounds.png, the final global student and its model card."""
ACCEPTS_EXTRA = True

COMPARE_RUNS = (("uniform", "static"), ("activity", "static"), ("uniform", "continual"), ("activity", "continual"))

#: Per-process cache of the public teacher and the initial student (a Flower simulation worker trains many
#: devices one after the other: it loads the teacher once).
_MODELS: dict[tuple, tuple] = {}


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML: distill train keys + a federated: section.")
    parser.add_argument("--compare", action="store_true",
                        help="Run uniform/activity selection x static/continual setting; one table and plot.")


class LocalDistillation:
    """The local step of a device: ``local_steps`` steps of :class:`~distill.DistillationTrainer` from the
    received global weights on the device's records (KD, CDA + teacher perturbation, local DP-SGD as the config
    says); returns the trainable weights and ``train_loss`` (and ``local_epsilon`` under DP-SGD)."""

    def __init__(self, args, local_steps: int, trainable: list[str]):
        self.config = args.distill_dict(only_non_default=True)
        self.local_steps, self.trainable = local_steps, list(trainable)

    def _models(self, args):
        from ..model_loading import load_causal_lm
        from ..distillation.student import build_student

        key = (args.teacher_model_name_or_path, args.student_model_name_or_path, args.student_num_layers,
               tuple(args.student_layers or ()))
        if key not in _MODELS:
            teacher = load_causal_lm(args.teacher_model_name_or_path, dtype=args.teacher_dtype,
                                     trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
            if args.student_model_name_or_path:
                student = load_causal_lm(args.student_model_name_or_path, dtype="float32",
                                         trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
            else:
                student = build_student(teacher, num_layers=args.student_num_layers, layers=args.student_layers)
            _MODELS[key] = (teacher, student)
        return _MODELS[key]

    def __call__(self, state, texts, server_round, device):
        from ..distillation.config import DistillationConfig
        from ..distillation.train import build_trainer

        with tempfile.TemporaryDirectory(prefix="fl-device-") as tmp:
            args = DistillationConfig(**{
                **self.config, "output_dir": tmp, "overwrite_output_dir": True, "max_steps": self.local_steps,
                "seed": int(self.config.get("seed", 42)) + 1000 * server_round + device,
                "eval_strategy": "no", "eval_on_start": False, "save_strategy": "no", "load_best_model_at_end": False,
                "validation_split_percentage": 0, "validation_file": None, "fairness_enabled": False,
                "push_to_hub": False, "report_to": "none", "disable_tqdm": True, "logging_steps": self.local_steps,
                "max_train_samples": None, "dataset_name": None, "train_file": None})
            teacher, pristine = self._models(args)
            student = copy.deepcopy(pristine)  # DP engines attach hooks: every round starts from a clean module
            missing = set(self.trainable) - set(state)
            if missing:
                raise KeyError(f"the server sent no weights for {sorted(missing)[:3]}")
            student.load_state_dict(state, strict=False)
            trainer = build_trainer(args, texts=texts, model=student, teacher_model=teacher)
            result = trainer.train()
            params = dict(student.named_parameters())
            out = {n: params[n].detach().clone().contiguous() for n in self.trainable}
            metrics = {"train_loss": float(result.training_loss)}
            privacy = os.path.join(tmp, PRIVACY_FILENAME)
            if os.path.isfile(privacy):
                with open(privacy) as fh:
                    metrics["local_epsilon"] = float(json.load(fh)["epsilon"])
        return out, metrics


def split_flags(extra: list[str]) -> tuple[dict, list[str]]:
    """Federated ``--key value`` flags (parsed as YAML scalars) and the remaining training flags."""
    import yaml

    from ..errors import ConfigError
    from ..federated.config import FederatedConfig

    keys = {f.name for f in dataclasses.fields(FederatedConfig)}
    fed, rest, i = {}, [], 0
    while i < len(extra):
        flag = extra[i]
        name = flag[2:].split("=", 1)[0] if flag.startswith("--") else None
        if name in keys:
            if "=" in flag:
                value = flag.split("=", 1)[1]
                i += 1
            elif i + 1 < len(extra):
                value = extra[i + 1]
                i += 2
            else:
                raise ConfigError(f"--{name} needs a value.")
            fed[name] = yaml.safe_load(value)
        else:
            rest.append(flag)
            i += 1
    return fed, rest


def load_configs(config_path: str, extra: list[str], compare: bool = False):
    """``(DistillationConfig, FederatedConfig)`` from the YAML file and the command-line flags (with
    ``compare``, the setting is the comparison's business: ``storage`` is accepted with any setting)."""
    import yaml

    from ..distillation.config import load_config
    from ..errors import ConfigError
    from ..federated.config import SECTION, FederatedConfig

    try:
        with open(config_path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"Config file '{config_path}' does not exist. Pass an existing YAML file to --config.") \
            from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path} must hold a mapping of key: value pairs.")
    fed_raw = raw.pop(SECTION, None) or {}
    if not isinstance(fed_raw, dict):
        raise ConfigError(f"{config_path}: '{SECTION}:' must be a section of key: value pairs.")
    fed_flags, rest = split_flags(extra)
    fed = {**fed_raw, **fed_flags}
    if compare:
        fed["setting"] = "continual"
    fl = FederatedConfig.from_dict(fed, source=config_path)
    fd, tmp = tempfile.mkstemp(prefix="distill-fl-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(raw, fh)
        try:
            args = load_config(tmp, cli_args=rest)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, config_path)) from None
    finally:
        os.remove(tmp)
    # Flower's simulation workers may start elsewhere: local paths must be absolute
    for key in ("teacher_model_name_or_path", "student_model_name_or_path", "tokenizer_name_or_path",
                "train_file", "validation_file"):
        value = getattr(args, key)
        if value and os.path.exists(value):
            setattr(args, key, os.path.abspath(value))
    return args, fl


def run_one(args, fl, name=None, texts=None) -> dict:
    """One federated run with :class:`LocalDistillation` as the devices' local step."""
    import torch

    from ..federated.simulation import run_federated, trainable_names
    from ..model_loading import load_causal_lm, resolve_builtin
    from ..distillation.student import build_student

    resolve_builtin(args.teacher_model_name_or_path)  # create a builtin teacher once, before the workers start
    if args.student_model_name_or_path:
        probe = load_causal_lm(args.student_model_name_or_path, dtype="float32", allow_pickle=args.allow_pickle)
    else:
        teacher = load_causal_lm(args.teacher_model_name_or_path, allow_pickle=args.allow_pickle)
        with torch.no_grad():
            probe = build_student(teacher, num_layers=args.student_num_layers, layers=args.student_layers)
    local = LocalDistillation(args, fl.local_steps, trainable_names(probe, args.dp_enabled))
    return run_federated(args, fl, local, texts=texts, name=name)


def run_compare(args, fl) -> dict:
    """uniform vs activity selection x static vs continual setting, same everything else."""
    from ..federated.report import format_table, plot_rounds, summary_row, write_json
    from ..federated.simulation import check_output_dir

    out = args.output_dir
    check_output_dir(out, args.overwrite_output_dir)
    reports = {}
    for selection, setting in COMPARE_RUNS:
        name = f"{selection}-{setting}"
        run_fl = dataclasses.replace(fl, selection=selection, setting=setting,
                                     storage=fl.storage if setting == "continual" else None)
        run_args = dataclasses.replace(args, output_dir=os.path.join(out, name))
        reports[name] = run_one(run_args, run_fl, name=name)
    rows = [summary_row(n, r) for n, r in reports.items()]
    table = format_table(rows)
    write_json({"federated": fl.to_dict(), "rows": rows}, os.path.join(out, FL_COMPARE_FILENAME))
    plot_rounds({n: r["rounds"] for n, r in reports.items()}, os.path.join(out, FL_COMPARE_PLOT),
                title=f"{fl.num_devices} devices, {fl.devices_per_round} a round, {fl.partition} partition: "
                      "uniform vs activity selection, static vs continual")
    print(table)
    print(f"Wrote {os.path.join(out, FL_COMPARE_FILENAME)} and {os.path.join(out, FL_COMPARE_PLOT)}")
    return {"rows": rows, "reports": reports}


def run(args, extra) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    train_args, fl = load_configs(args.config, extra, compare=args.compare)
    if args.compare:
        run_compare(train_args, fl)
        return 0
    report = run_one(train_args, fl)
    final = report["final"]
    print(f"Saved the global student, fl_report.json and fl_rounds.png to {train_args.output_dir} "
          f"(perplexity {final['perplexity']:.3f}, |bias| {final['cooccurrence_bias_mean_abs']:.3f})")
    return 0


# ---------------------------------------------------------------------------------------------------
# A real deployment: `flwr run` with [tool.flwr.app.components] serverapp = "distill.commands.federated:server_app"
# and clientapp = "distill.commands.federated:client_app"; run config key `config` = the YAML (and optionally
# `output-dir`). SuperNodes are started with --node-config "partition-id=N data-file=PATH".
# ---------------------------------------------------------------------------------------------------
_DEPLOYED: dict[str, object] = {}


def _deployed_configs(context):
    config = context.run_config.get("config")
    if not config:
        from ..errors import ConfigError

        raise ConfigError("The Flower run config has no 'config' key: set config = \"path/to/config.yaml\" under "
                          "[tool.flwr.app.config].")
    extra = ["--output_dir", str(context.run_config["output-dir"])] if "output-dir" in context.run_config else []
    return load_configs(str(config), extra)


def _deployed_client(context):
    """The ClientApp of a deployed SuperNode (built once per process from the run config)."""
    if "client" not in _DEPLOYED:
        from ..federated.app import DeviceRecords, make_client_app
        from ..federated.simulation import trainable_names
        from ..model_loading import load_causal_lm
        from ..distillation.student import build_student

        args, fl = _deployed_configs(context)
        probe = build_student(load_causal_lm(args.teacher_model_name_or_path), num_layers=args.student_num_layers,
                              layers=args.student_layers)
        local = LocalDistillation(args, fl.local_steps, trainable_names(probe, args.dp_enabled))
        _DEPLOYED["client"] = make_client_app(local, DeviceRecords(fl, None))
    return _DEPLOYED["client"]


def _make_deployment_apps():
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client = ClientApp()
    server = ServerApp()

    @client.query()
    def _query(msg, context):
        return _deployed_client(context)(msg, context)

    @client.train()
    def _train(msg, context):
        return _deployed_client(context)(msg, context)

    @server.main()
    def _main(grid, context):
        from ..federated.simulation import FederatedRun

        args, fl = _deployed_configs(context)
        run = FederatedRun(args, fl, local_train=None, name=None)  # the devices run their own ClientApp
        run.server(grid, context)
        run.finish()

    return server, client


def __getattr__(name):  # Flower imports server_app / client_app; `distill --help` stays free of flwr
    if name in ("server_app", "client_app"):
        server, client = _make_deployment_apps()
        globals().update(server_app=server, client_app=client)
        return globals()[name]
    raise AttributeError(name)
