"""`distill federated --config FILE [--compare] [--key value ...]`: federated distillation on Flower.

The YAML is a `distill train` config (the local step every selected device runs) plus a ``federated:`` section
(:class:`~distill.federated.config.FederatedConfig`). Flags override either: ``--num_rounds 5`` sets a federated
key, ``--learning_rate 1e-3`` a training key. The devices' local step is
:class:`~distill.federated.local_training.LocalDistillation`; ``server_app`` / ``client_app`` here are the apps of
a real deployment (:mod:`distill.federated.deployment`), reading the configs with :func:`load_configs`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

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


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML: distill train keys + a federated: section.")
    parser.add_argument("--compare", action="store_true",
                        help="Run uniform/activity selection x static/continual setting; one table and plot.")


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
    """One federated run with :class:`~distill.federated.local_training.LocalDistillation` as the local step."""
    from ..federated.local_training import make_local_step
    from ..federated.simulation import run_federated

    return run_federated(args, fl, make_local_step(args, fl), texts=texts, name=name)


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
    write_json({"federated": fl.to_dict(), "rows": rows}, os.path.join(out, "compare.json"))
    plot_rounds({n: r["rounds"] for n, r in reports.items()}, os.path.join(out, "compare.png"),
                title=f"{fl.num_devices} devices, {fl.devices_per_round} a round, {fl.partition} partition: "
                      "uniform vs activity selection, static vs continual")
    print(table)
    print(f"Wrote {os.path.join(out, 'compare.json')} and {os.path.join(out, 'compare.png')}")
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


def __getattr__(name):  # Flower imports server_app / client_app; `distill --help` stays free of flwr
    if name in ("server_app", "client_app"):
        from ..federated.deployment import make_deployment_apps

        server, client = make_deployment_apps(load_configs)
        globals().update(server_app=server, client_app=client)
        return globals()[name]
    raise AttributeError(name)
