"""`distill federated --config FILE [--compare] [--KEY VALUE ...]`: federated distillation on Flower.

The YAML is a `distill train` config (the local step every selected device runs) plus a ``federated:`` section
(:class:`~distill.federated.config.FederatedConfig`). Flags override either: ``--num_rounds 5`` sets a federated
key, ``--learning_rate 1e-3`` a training key. The devices' local step is
:class:`~distill.federated.local_training.LocalDistillation`. Without ``--superlink`` the run uses Flower's
simulation engine; with ``--superlink HOST:PORT`` it is submitted with ``flwr run`` to an existing deployment
(a SuperLink and its SuperNodes). ``server_app`` / ``client_app`` here are aliases of the deployment's apps in
:mod:`distill.federated.deployment`.
"""

from __future__ import annotations

import dataclasses
import os

from ..cli import BoolAction
from ..outputs import FL_COMPARE_FILENAME, FL_COMPARE_PLOT

NAME = "federated"
HELP = ("Federated distillation on Flower: devices keep their data, the server selects K of N devices a round "
        "(uniform or by activity) and averages their students (static or continual setting, optional DP).")
DESCRIPTION = HELP + """

The config is a `distill train` YAML plus a `federated:` section (num_devices, devices_per_round, num_rounds,
local_steps, partition, partition_alpha, partition_attribute, selection, activity_exponent, setting, storage,
central_dp, ...). Flags override keys of either part: --num_rounds 5 --learning_rate 1e-3 (dashes or
underscores: --num-rounds; a bare boolean --central_dp means true, --central_dp false sets it).
--compare runs uniform vs activity selection x static vs continual setting and writes one table and one plot.
Writes OUTPUT_DIR/fl_report.json, fl_rounds.png, the final global student and its model card.
--superlink HOST:PORT submits the same job to a running deployment (flwr run; TLS verified with
--root-certificates; the ServerApp writes OUTPUT_DIR on the SuperLink's machine), see docs/federated.md."""
ACCEPTS_EXTRA = True
USAGE = "distill federated --config FILE [--config FILE ...] [--compare] [--KEY VALUE ...]"

COMPARE_RUNS = (("uniform", "static"), ("activity", "static"), ("uniform", "continual"), ("activity", "continual"))


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, action="append",
                        help="YAML: distill train keys + a federated: section. Give it several times to merge files "
                             "in order (a later file wins key by key).")
    parser.add_argument("--compare", action=BoolAction,
                        help="Run uniform/activity selection x static/continual setting; one table and plot.")
    parser.add_argument("--superlink", default=None, metavar="HOST:PORT",
                        help="Run on an existing Flower deployment (its SuperLink's address) instead of the "
                             "simulation engine: the job is submitted with `flwr run`.")
    parser.add_argument("--root-certificates", default=None, metavar="CA.pem",
                        help="With --superlink: the CA certificate that signed the SuperLink's TLS certificate "
                             "(default: the system's CAs).")
    parser.add_argument("--app-dir", default=None,
                        help="With --superlink: the Flower app project (its pyproject.toml names the apps; "
                             "default: this package's source tree).")


def load_configs(config_paths, extra: list[str], compare: bool = False):
    """``(DistillationConfig, FederatedConfig)`` from the YAML file(s) and the command-line flags."""
    from ..federated.config import load_federated_config

    return load_federated_config(config_paths, extra, compare=compare)


def run_one(args, fl, name=None, texts=None) -> dict:
    """One federated run with :class:`~distill.federated.local_training.LocalDistillation` as the local step."""
    from ..federated.local_training import make_local_step
    from ..federated.simulation import run_federated

    return run_federated(args, fl, make_local_step(args, fl), texts=texts, name=name)


def run_compare(args, fl) -> dict:
    """uniform vs activity selection x static vs continual setting, same everything else."""
    from ..federated.report import comparison_rows, format_table, plot_rounds, write_json
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
    rows = comparison_rows(reports)
    table = format_table(rows)
    write_json({"federated": fl.to_dict(), "rows": rows}, os.path.join(out, FL_COMPARE_FILENAME))
    plot_rounds({n: r["rounds"] for n, r in reports.items()}, os.path.join(out, FL_COMPARE_PLOT),
                title=f"{fl.num_devices} devices, {fl.devices_per_round} a round, {fl.partition} partition: "
                      "uniform vs activity selection, static vs continual")
    print(table)
    print(f"Wrote {os.path.join(out, FL_COMPARE_FILENAME)} and {os.path.join(out, FL_COMPARE_PLOT)}")
    return {"rows": rows, "reports": reports}


def run_on_superlink(args, extra) -> int:
    """Submit the job to a running SuperLink with ``flwr run`` (a Flower connection in a private FLWR_HOME)."""
    import subprocess
    import tempfile

    from ..errors import ConfigError
    from ..federated.deployment import flwr_run_command, write_flower_connection

    if args.compare or len(args.config) != 1:
        raise ConfigError("--superlink runs one job from one --config file: drop --compare, merge the YAML files.")
    app_dir = args.app_dir or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(app_dir, "pyproject.toml")):
        raise ConfigError(f"No Flower app project (pyproject.toml) in {app_dir}: pass --app-dir.")
    with tempfile.TemporaryDirectory(prefix="distill-flwr-") as home:
        write_flower_connection(home, args.superlink, args.root_certificates)
        cmd = flwr_run_command(args.superlink, args.config[0], list(extra), app_dir)
        return subprocess.call(cmd, env={**os.environ, "FLWR_HOME": home})


def run(args, extra) -> int:
    if getattr(args, "superlink", None):
        return run_on_superlink(args, extra)
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


def __getattr__(name):  # alias of distill.federated.deployment's apps; `distill --help` stays free of flwr
    if name in ("server_app", "client_app"):
        from ..federated import deployment

        return getattr(deployment, name)
    raise AttributeError(name)
