"""`distill cache-teacher --config FILE --output_dir CACHE`: run the teacher once, store its top-k targets."""

from __future__ import annotations

from ..cli import BoolAction

NAME = "cache-teacher"
ORDER = 15
HELP = "Run the teacher once over the training data and store its top-k KD targets (then train with teacher_cache)."
DESCRIPTION = HELP + """

Uses the training config as it is (data, CDA, packing, temperature, perturbation, teacher): the cache holds,
per training position, the top-k ids and log-probabilities of the KD target and its tail mass. Train from it
with `teacher_cache: CACHE` (or --teacher_cache CACHE). Other config keys may follow as --key value flags
(e.g. --teacher_cache_top_k 128 --teacher_cache_dtype float32). Interrupted builds resume: run the same
command again. Several processes: accelerate launch -m distill cache-teacher ... (shards are split)."""
ACCEPTS_EXTRA = True
USAGE = "distill cache-teacher --config FILE [--output_dir CACHE] [--batch_size N] [--no_progress] [--KEY VALUE ...]"


def add_arguments(parser) -> None:
    from ..cli import number

    parser.add_argument("--config", default=None, help="The training config (YAML) whose teacher targets to cache.")
    parser.add_argument("--output_dir", default=None,
                        help="The cache directory (default: the config's teacher_cache).")
    parser.add_argument("--batch_size", type=number(int, min=1), default=None,
                        help="Rows per teacher forward (default: per_device_eval_batch_size).")
    parser.add_argument("--no_progress", action=BoolAction, help="No progress bar.")


def run(args, extra: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    from ..distillation.config import load_config, read_yaml
    from ..errors import ConfigError
    from ..distillation.teacher_cache import DEFAULT_TOP_K, build_teacher_cache
    from ..distillation.train import build_trainer

    hf_logging.set_verbosity_warning()
    cache_dir = args.output_dir
    if cache_dir is None and args.config:
        cache_dir = read_yaml(args.config).get("teacher_cache")
    if not cache_dir:
        raise ConfigError("distill cache-teacher needs --output_dir CACHE (or teacher_cache in the config).")
    # the run whose targets are cached, minus what only training needs (DP, fairness, logging, the cache itself)
    overrides = dict(teacher_cache=None, dp_enabled=False, fairness_enabled=False, report_to="none",
                     output_dir=cache_dir)
    config = load_config(args.config, cli_args=extra, overrides=overrides)
    trainer = build_trainer(config)
    manifest = build_teacher_cache(trainer, cache_dir, top_k=config.teacher_cache_top_k or DEFAULT_TOP_K,
                                   dtype=config.teacher_cache_dtype, shard_size=config.teacher_cache_shard_size,
                                   batch_size=args.batch_size, progress=not args.no_progress)
    if trainer.is_world_process_zero():
        print(f"Saved the teacher cache to {cache_dir}: {manifest.num_rows} rows, {manifest.num_tokens} tokens, "
              f"top-{manifest.top_k} ({manifest.bytes_per_token} bytes a token). Train from it with "
              f"--teacher_cache {cache_dir}")
    return 0
