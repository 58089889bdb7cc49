"""The names of every file a run writes (and of the dataset columns shared across packages), and the checks
every command makes on its output path before it starts working.

Each name is defined here once; the modules that write or read a file import its name from here.

A command checks where it will write before it loads a model or reads data, so that a bad path (an existing
file, a directory under a file, a previous run that would be mixed with this one) costs a second and loses
nothing. Report files of a previous run are replaced only when the user asks for it (``--overwrite``), and
the ones this run would not rewrite are removed then, so one directory never mixes two runs.
"""

from __future__ import annotations

import os

from .errors import DistillError, option_hint

# ---- column names -------------------------------------------------------------------------------------------
RECORD_ID = "record_id"     # the record a row belongs to (DP-SGD clips per record; CDA rows share their source's)
CACHE_ROW = "cache_row"     # the teacher-cache row of a training row (distill.distillation.teacher_cache)

# ---- a training output_dir ---------------------------------------------------------------------------------
CONFIG_FILENAME = "distill_config.yaml"   # the training config, re-runnable with `distill train --config`
PRIVACY_FILENAME = "privacy.json"         # DP-SGD accounting (distill.privacy)
FAIRNESS_FILENAME = "fairness.json"       # fairness report (distill evaluate, FairnessCallback)
CARD_FILENAME = "README.md"               # the model card (distill.hub)
RESULTS_FILENAME = "all_results.json"     # final metrics (train + eval), the Trainer's name for them
TRAINER_STATE_FILENAME = "trainer_state.json"  # the Trainer's state (log history, global_step), also per checkpoint
TRAINING_ARGS_FILENAME = "training_args.bin"   # the Trainer's pickled arguments: never kept (the YAML replaces it)
MODEL_CONFIG_FILENAME = "config.json"     # the model architecture (transformers' save_pretrained)
AUDIT_FILENAME = "audit.json"             # `distill audit` report (default: inside the audited model directory)

RUN_ID_FILENAME = "run_id"                # the run's id (uuid4), one line; stamped into every report it writes
RUN_ID_KEY = "run_id"                     # the key of that id in each JSON report (fairness, privacy, fl_report)

# ---- a checkpoint-N folder ---------------------------------------------------------------------------------
CHECKPOINT_COMPLETE_MARKER = ".complete"        # written last: the checkpoint was saved whole
PRIVACY_STATE_FILENAME = "privacy_state.json"   # the DP accountant's state, to continue the ε curve on resume

# ---- `distill evaluate --out` ------------------------------------------------------------------------------
PER_PROFESSION_FILENAME = "per_profession.csv"
DISPARITY_PLOT = "disparity.png"
GENERATIONS_FILENAME = "generations.jsonl"
SUITE_PLOT = "suite.png"
COMPARISON_PLOT = "comparison.png"        # several models: beside their per-model report directories
#: Everything `distill evaluate` may write into its --out directory.
FAIRNESS_REPORT_FILES = (FAIRNESS_FILENAME, PER_PROFESSION_FILENAME, DISPARITY_PLOT, GENERATIONS_FILENAME, SUITE_PLOT)
#: What `distill evaluate` with several models writes beside their per-model report directories.
COMPARISON_FILES = (COMPARISON_PLOT,)

# ---- federated runs ----------------------------------------------------------------------------------------
FL_REPORT_FILENAME = "fl_report.json"     # rounds, devices, final metrics of `distill federated`
FL_PLOT_FILENAME = "fl_rounds.png"
FL_COMPARE_FILENAME = "compare.json"      # `distill federated --compare`: federated vs central rows
FL_COMPARE_PLOT = "compare.png"

# ---- a teacher cache (`distill cache-teacher`) -------------------------------------------------------------
TEACHER_CACHE_MANIFEST = "manifest.json"
TEACHER_CACHE_SHARDS_DIR = "shards"
TEACHER_CACHE_SHARD = "shard-{index:05d}.arrow"   # format with index=

# ---- demos and scripts -------------------------------------------------------------------------------------
DEMO_REPORT_FILENAME = "demo_report.json"  # `distill demo`
DEMO_PLOT = "demo.png"
SWEEP_FILENAME = "sweep.json"              # `distill audit --sweep`
SWEEP_PLOT = "sweep.png"
CACHE_QUALITY_FILENAME = "cache_quality.json"  # scripts/cache_quality.py

#: Every report file a run (or a later command on its directory) may leave in an output_dir: `distill train
#: --overwrite_output_dir true` removes them all first, so no report of an earlier run survives next to the new one.
RUN_REPORT_FILES = (FAIRNESS_FILENAME, PER_PROFESSION_FILENAME, DISPARITY_PLOT, GENERATIONS_FILENAME, SUITE_PLOT,
                    COMPARISON_PLOT, PRIVACY_FILENAME, RESULTS_FILENAME, AUDIT_FILENAME, FL_REPORT_FILENAME,
                    FL_PLOT_FILENAME, FL_COMPARE_FILENAME, FL_COMPARE_PLOT, DEMO_REPORT_FILENAME, DEMO_PLOT,
                    SWEEP_FILENAME, SWEEP_PLOT, CACHE_QUALITY_FILENAME, RUN_ID_FILENAME)


def new_run_id() -> str:
    import uuid

    return uuid.uuid4().hex


def read_run_id(directory: str) -> str | None:
    """The run id recorded in ``directory`` (None when it has none: an older run, or not a run directory)."""
    try:
        with open(os.path.join(directory, RUN_ID_FILENAME), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def write_run_id(directory: str, run_id: str) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, RUN_ID_FILENAME)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(run_id + "\n")
    os.replace(path + ".tmp", path)


def stamp_run_id(path: str, run_id: str | None) -> None:
    """Add ``run_id`` to the JSON object in ``path`` (atomically; nothing to do without a file or an id)."""
    import json

    if not run_id or not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as fh:
        body = json.load(fh)
    if not isinstance(body, dict) or body.get(RUN_ID_KEY) == run_id:
        return
    body[RUN_ID_KEY] = run_id
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2)
    os.replace(path + ".tmp", path)


def _file_above(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` when it is a file (so ``path`` cannot be created), else None."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent
    return p if not os.path.isdir(p) and p != os.path.abspath(path) else None


def check_output_dir(path: str, option: str = "output_dir", *, empty: bool = False) -> None:
    """Raise a :class:`DistillError` unless ``path`` can be a (with ``empty``: new or empty) output directory."""
    name = option_hint(option, None)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DistillError(f"{name} '{path}' is an existing file, not a directory: choose a directory path.")
    blocker = _file_above(path)
    if blocker:
        raise DistillError(f"{name} '{path}' cannot be created: '{blocker}' is a file, not a directory.")
    if empty and os.path.isdir(path) and os.listdir(path):
        raise DistillError(f"{name} '{path}' exists and is not empty: choose a new directory (nothing was changed).")


def check_output_file(path: str, option: str = "output") -> None:
    """Raise a :class:`DistillError` unless ``path`` can be written as a file."""
    name = option_hint(option, None)
    if os.path.isdir(path):
        raise DistillError(f"{name} '{path}' is a directory: give a file path.")
    blocker = _file_above(path)
    if blocker:
        raise DistillError(f"{name} '{path}' cannot be created: '{blocker}' is a file, not a directory.")


def check_report_dir(path: str, files=FAIRNESS_REPORT_FILES, *, overwrite: bool = False,
                     option: str = "out") -> list[str]:
    """Check a report directory before the work starts; returns the previous report's files in it.

    Without ``overwrite``, a directory that holds any of ``files`` is refused (a new report would mix with
    the old one). With it, the caller removes the returned files (:func:`remove_files`) once the new report
    is ready, right before writing it.
    """
    check_output_dir(path, option)
    previous = [f for f in files if os.path.exists(os.path.join(path, f))]
    if previous and not overwrite:
        raise DistillError(
            f"{option_hint(option, None)} '{path}' already holds a report ({', '.join(previous)}): a new one would "
            f"mix two runs. Choose another directory, or pass {option_hint('overwrite', True)} to replace it.")
    return previous


def remove_files(directory: str, names) -> None:
    """Remove ``names`` from ``directory`` (missing ones are fine)."""
    for name in names:
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass
