"""`distill train --config FILE [--key value ...]`."""

from __future__ import annotations

NAME = "train"
HELP = "Distil a teacher into a student (config keys from YAML, overridden by --key value flags)."
ADD_HELP = False  # the full key list comes from the config parser
ACCEPTS_EXTRA = True
USAGE = "distill train --config FILE [--config FILE ...] [--KEY VALUE ...] (every key: distill train --help)"


def add_arguments(parser) -> None:
    parser.add_argument("-h", "--help", action="store_true", help="Show every config key and exit.")


def run(args, extra: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    from ..distillation.config import load_config
    from ..distillation.train import run_training

    if args.help:
        print(format_train_help())
        return 0
    hf_logging.set_verbosity_warning()
    config = load_config(cli_args=extra)
    if not any(a.split("=")[0] in ("--config", "-c") for a in extra) and not (config.dataset_name or config.train_file):
        from ..errors import ConfigError
        from ..outputs import check_output_dir

        check_output_dir(config.output_dir, "output_dir")
        raise ConfigError("No --config and no training data: give --config FILE (e.g. configs/tiny.yaml), or "
                          "--dataset_name / --train_file with --teacher_model_name_or_path (default: gpt2 from "
                          "the Hub). `distill train --help` lists every key and its default.")
    trainer = run_training(config)
    if trainer.is_world_process_zero():
        print(f"Saved the student to {config.output_dir}")
    return 0


def format_train_help() -> str:
    """`distill train --help`: fair-distill's own keys first, then every TrainingArguments key."""
    from ..distillation.config import DistillationConfig, config_field_names, own_field_names
    from ..distillation.config_loader import format_help

    own = own_field_names()
    redeclared = set(DistillationConfig.__annotations__) - set(own)
    rest = [n for n in config_field_names() if n not in own]
    rest.sort(key=lambda n: n not in redeclared)  # the keys with a declared range first
    return format_help(
        DistillationConfig, prog="distill train",
        usage="distill train --config FILE [--config FILE ...] [--KEY VALUE ...]",
        description="Distil a teacher into a student. Keys come from the YAML file(s) given with --config (merged "
                    "in order, a later file wins) and are overridden by --key value flags (dashes or underscores: "
                    "--max-steps = --max_steps). Boolean keys: a bare --flag means true; --flag true|false.",
        groups=[("fair-distill keys (teacher, student, loss, data, CRR, DP, fairness)", own),
                ("transformers.TrainingArguments keys", rest)])
