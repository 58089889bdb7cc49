"""Which checkpoint a run resumes from, and a marker that says a checkpoint was saved completely.

The Trainer writes a checkpoint file by file into ``checkpoint-N`` (weights, optimizer, scheduler, RNG
states, ``trainer_state.json`` last), and callbacks add their own state in ``on_save`` (e.g. the privacy
accountant). A kill during a save leaves a half-written folder with the highest step number, which
``transformers.trainer_utils.get_last_checkpoint`` would pick. Here:

* :class:`CheckpointCompleteCallback` writes :data:`COMPLETE_MARKER` into the checkpoint in ``on_save``, after
  everything else (it is added as the last callback), by write-to-temp-and-rename: its presence means the
  checkpoint is whole.
* :func:`is_complete` accepts a checkpoint with the marker. Checkpoints written without markers (a plain
  ``Trainer``, older runs) count as complete when their ``trainer_state.json`` parses, unless another
  checkpoint of the same run has a marker (then the run writes markers, and a missing one means a cut save).
* :func:`last_complete_checkpoint` skips incomplete checkpoints with a warning.
* :func:`check_not_finished` refuses to "resume" a run that already reached its last step: the Trainer would
  run a step past ``max_steps`` and the final model, metrics and card would be rewritten.
"""

from __future__ import annotations

import json
import logging
import os
import re

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import ConfigError, option_hint
from ..outputs import CHECKPOINT_COMPLETE_MARKER as COMPLETE_MARKER, TRAINER_STATE_FILENAME as TRAINER_STATE

logger = logging.getLogger(__name__)

_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def list_checkpoints(output_dir: str) -> list[str]:
    """``checkpoint-N`` folders of ``output_dir``, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir)
             if (m := _CHECKPOINT_RE.match(name)) and os.path.isdir(os.path.join(output_dir, name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def read_trainer_state(checkpoint: str) -> dict | None:
    """The checkpoint's ``trainer_state.json``, or None when it is missing or cut short."""
    try:
        with open(os.path.join(checkpoint, TRAINER_STATE), encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "global_step" in state else None


def is_complete(checkpoint: str, markers_expected: bool = False) -> bool:
    """Whether ``checkpoint`` was saved completely (see the module docstring)."""
    if read_trainer_state(checkpoint) is None:
        return False
    return os.path.isfile(os.path.join(checkpoint, COMPLETE_MARKER)) or not markers_expected


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The last complete checkpoint of ``output_dir`` (None if there is none); incomplete ones are skipped."""
    checkpoints = list_checkpoints(output_dir)
    markers = any(os.path.isfile(os.path.join(c, COMPLETE_MARKER)) for c in checkpoints)
    for ckpt in reversed(checkpoints):
        if is_complete(ckpt, markers_expected=markers):
            return ckpt
        logger.warning("Skipping %s: it is incomplete (a save was interrupted). Resuming from the checkpoint "
                       "before it; delete the folder to silence this warning.", ckpt)
    return None


def check_not_finished(checkpoint: str, args) -> None:
    """Refuse to resume from a checkpoint at the run's last step when the config would not train further."""
    state = read_trainer_state(checkpoint) or {}
    step, planned = state.get("global_step", 0), state.get("max_steps", 0)
    if not planned or step < planned:
        return
    if args.max_steps > 0:
        if args.max_steps > step:
            return
    elif args.num_train_epochs > state.get("num_train_epochs", args.num_train_epochs):
        return
    raise ConfigError(
        f"{checkpoint} is the end of a finished run (step {step} of {planned}): there is nothing to resume, and the "
        f"run's model, metrics and card are kept. To train further, resume with a larger "
        f"{option_hint('max_steps', None)}; to start over, choose a new {option_hint('output_dir', None)}.")


class CheckpointCompleteCallback(TrainerCallback):
    """Marks each checkpoint complete once everything is saved (add it after every other callback)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if os.path.isdir(ckpt):
                tmp = os.path.join(ckpt, COMPLETE_MARKER + ".tmp")
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump({"global_step": state.global_step}, fh)
                os.replace(tmp, os.path.join(ckpt, COMPLETE_MARKER))
        return control
