"""`distill train`: build teacher, student and data from a config, train, and save the student safely."""

from __future__ import annotations

import contextlib
import json
import logging
import os

from .checkpoints import (CheckpointCompleteCallback, check_not_finished, is_complete, last_complete_checkpoint,
                          read_trainer_state)
from .config import DistillationConfig
from .data import prepare_datasets
from ..errors import ConfigError
from ..hub.push import check_can_push, publish_run
from ..model_loading import load_tokenizer, resolve_builtin
from ..outputs import (PRIVACY_FILENAME, RESULTS_FILENAME, RUN_ID_FILENAME, RUN_REPORT_FILES, new_run_id,
                       read_run_id, remove_files, stamp_run_id, write_run_id)
from ..outputs import check_output_dir as check_output_path
from .parallel import check_parallel_engine

logger = logging.getLogger(__name__)


def check_output_dir(args: DistillationConfig) -> None:
    """Refuse to train into a non-empty output_dir unless resuming or explicitly allowed (nothing is lost)."""
    out = args.output_dir
    check_output_path(out, "output_dir")
    if args.resume_from_checkpoint or args.overwrite_output_dir:
        return
    if os.path.isdir(out) and os.listdir(out):
        last = last_complete_checkpoint(out)
        state = (read_trainer_state(last) or {}) if last else {}
        unfinished = last and state.get("global_step", 0) < state.get("max_steps", 0)
        hint = (f" To continue that run, pass --resume_from_checkpoint latest ({last}); otherwise choose"
                if unfinished else " Choose")
        raise ConfigError(
            f"output_dir '{out}' already exists and is not empty; training would overwrite it.{hint} "
            "a new --output_dir, or pass --overwrite_output_dir true."
        )


def _start_run_records(args: DistillationConfig, trainer, resume: str | None) -> str | None:
    """On the main process: with ``overwrite_output_dir``, remove every report of an earlier run (so none is
    read as this run's), then record this run's id (kept when resuming) in ``output_dir``."""
    if not trainer.is_world_process_zero():
        return None
    out = args.output_dir
    if args.overwrite_output_dir and not resume and os.path.isdir(out):
        remove_files(out, RUN_REPORT_FILES)
    run_id = (read_run_id(out) if resume else None) or new_run_id()
    write_run_id(out, run_id)
    return run_id


def resolve_resume(args: DistillationConfig) -> str | None:
    """``resume_from_checkpoint``: a path, or 'true'/'latest' for the last complete checkpoint in output_dir."""
    value = args.resume_from_checkpoint
    if value is None:
        return None
    if str(value).lower() in ("true", "latest", "last"):
        last = last_complete_checkpoint(args.output_dir)
        if last is None:
            raise ConfigError(f"No complete checkpoint-* folder in {args.output_dir} to resume from.")
        value = last
    elif not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint '{value}' is not a directory.")
    elif not is_complete(value):
        raise ConfigError(f"resume_from_checkpoint '{value}' is incomplete (no valid trainer_state.json: its save "
                          "was interrupted): pass an earlier checkpoint, or 'latest' for the last complete one.")
    check_not_finished(value, args)
    return value


def build_trainer(args: DistillationConfig, texts: list[str] | None = None, callbacks=None, **trainer_kwargs):
    """Teacher, student, tokenizer, datasets and a ready :class:`~distill.distillation.trainer.DistillationTrainer`."""
    from .trainer import DistillationTrainer

    check_parallel_engine(args)  # refuse an unsupported accelerate engine before preparing any data
    if args.ddp_find_unused_parameters is None and args.world_size > 1:
        # every student parameter takes part in the loss: DDP's search for unused ones only costs a graph walk a
        # step and warns that it found none (set ddp_find_unused_parameters: true for a student that has some)
        args.ddp_find_unused_parameters = False
    with args.main_process_first(desc="resolving builtin models"):
        resolve_builtin(args.teacher_model_name_or_path)  # rank 0 creates a builtin teacher, others wait
    tokenizer = load_tokenizer(args.tokenizer_name_or_path or args.teacher_model_name_or_path,
                               trust_remote_code=args.trust_remote_code)
    with args.main_process_first(desc="preparing the dataset"):
        train_ds, eval_ds = prepare_datasets(args, tokenizer, texts=texts)
    if args.eval_strategy != "no" and eval_ds is None:
        raise ConfigError("eval_strategy is set but there is no validation data: add validation_file or "
                          "validation_split_percentage > 0.")
    trainer = DistillationTrainer(args=args, processing_class=tokenizer,
                                  train_dataset=train_ds, eval_dataset=eval_ds, callbacks=callbacks, **trainer_kwargs)
    if args.fairness_enabled:
        from ..fairness.callback import FairnessCallback

        trainer.add_callback(FairnessCallback.from_trainer(trainer))
    trainer.add_callback(CheckpointCompleteCallback())  # last: marks a checkpoint whole after every other save
    return trainer


def _new_dirs(path: str) -> list[str]:
    """``path`` and those of its ancestors that do not exist yet, deepest first."""
    out, p = [], os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        out.append(p)
        p = os.path.dirname(p)
    return out


def _remove_empty(dirs: list[str]) -> None:
    """Remove the directories a refused run created, if they are still empty (nothing of value is touched)."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            return


def run_training(args: DistillationConfig, texts: list[str] | None = None, callbacks=None):
    """Train end to end: returns the trainer after saving the student to ``args.output_dir``.

    A run refused before it writes anything (DP settings, a cache mismatch, a model that does not load...) leaves
    no empty ``output_dir`` behind: directories it created are removed while still empty.
    """
    created = _new_dirs(args.output_dir)
    try:
        return _run_training(args, texts, callbacks)
    except BaseException:
        if created and os.path.isdir(created[0]) and os.listdir(created[0]) == [RUN_ID_FILENAME]:  # refused at the start of train()
            os.remove(os.path.join(created[0], RUN_ID_FILENAME))
        _remove_empty(created)
        raise


def _run_training(args: DistillationConfig, texts: list[str] | None, callbacks):
    check_output_dir(args)
    if args.push_to_hub:  # fail before training, not after it: offline, no token, bad repo id
        check_can_push(args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)), args.hub_token)
    resume = resolve_resume(args)
    if args.teacher_cache:  # a deleted or truncated shard: refused before the teacher and the data are loaded
        from .teacher_cache import verify_teacher_cache

        verify_teacher_cache(args.teacher_cache)
    trainer = build_trainer(args, texts=texts, callbacks=callbacks)
    run_id = _start_run_records(args, trainer, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    with _quiet_default_configs():
        trainer.save_student(args.output_dir)  # student, tokenizer, distill_config.yaml: atomically, main process
        if args.fairness_enabled:  # the final student's fairness report, for the model card: every process
            from ..fairness.callback import write_final_report  # evaluates its share; the main one writes

            write_final_report(trainer, args.output_dir)
        if trainer.is_world_process_zero():
            stamp_run_id(os.path.join(args.output_dir, PRIVACY_FILENAME), run_id)  # written by the DP callback
            trainer.save_state()
            with open(os.path.join(args.output_dir, RESULTS_FILENAME), "w") as fh:
                json.dump(metrics, fh, indent=2, sort_keys=True)
            publish_run(args)  # keep last: the model card reads the files above; then push_to_hub
    return trainer


@contextlib.contextmanager
def _quiet_default_configs():
    """Saving builds a default config to record which keys differ from their defaults; in a multi-process run
    transformers warns, for that throw-away object, that "parallel_mode != DISTRIBUTED". The run's own config
    was checked at start-up, so that warning is noise here."""
    ta_logger = logging.getLogger("transformers.training_args")
    level = ta_logger.level
    ta_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ta_logger.setLevel(level)
