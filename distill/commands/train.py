"""`distill train --config FILE [--key value ...]`."""

from __future__ import annotations

NAME = "train"
HELP = "Distil a teacher into a student (config keys from YAML, overridden by --key value flags)."
ADD_HELP = False  # the full key list comes from the config parser
ACCEPTS_EXTRA = True


def add_arguments(parser) -> None:
    parser.add_argument("-h", "--help", action="store_true", help="Show every config key and exit.")


def run(args, extra: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    from ..distillation.config import format_train_help, load_config
    from ..distillation.train import run_training

    if args.help:
        print(format_train_help())
        return 0
    hf_logging.set_verbosity_warning()
    config = load_config(cli_args=extra)
    trainer = run_training(config)
    if trainer.is_world_process_zero():
        print(f"Saved the student to {config.output_dir}")
    return 0
