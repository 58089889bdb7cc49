"""`DPSGDEngine`: the DP-SGD state of one training run — records, per-record clipping, noise, accounting.

The engine knows the student, its trainable parameters and the DP settings; it does not know the trainer.
The trainer owns the step and calls the engine around it (:meth:`DistillationTrainer.training_step
<distill.distillation.trainer.DistillationTrainer.training_step>`)::

    loader = engine.dataloader(dataset, collate_fn, num_processes=W, process_index=rank)
    for each micro-batch:
        with engine.clipping(student, record_ids, num_rows) as clip:   # nothing when the micro-batch is empty
            per_row_loss = ...                                         # [B], one loss per row
            clip.backward(per_row_loss)
        if last micro-batch of the logical step:
            engine.noise_step()                                        # every process, every step

What happens, per logical step (``gradient_accumulation_steps × num_processes`` micro-batches):

1. data — records are Poisson-sampled with rate ``q = per_device_batch × accumulation × processes / records``
   (:mod:`distill.privacy.sampling`); all rows of a record stay together;
2. each micro-batch — the per-row loss, per-record gradients clipped to ``dp_max_grad_norm`` and summed
   (``fast``: :mod:`distill.privacy.bookkeeping`; ``hooks``/``ghost``: :mod:`distill.privacy.opacus_modes`,
   imported only when chosen). The clipping runs on the *unwrapped* student: DDP's own gradient all-reduce
   and buffer broadcasts never run under DP, so an empty micro-batch (Poisson drew no record for this process)
   has no collective to miss;
3. the last micro-batch — on every process, the clipped sums of all processes are summed with one Gaussian
   draw ``N(0, σ²C²)`` (one ``all_reduce``) and divided by the expected batch size (:mod:`distill.privacy.noise`);
   the accountant records the step (:mod:`distill.privacy.accounting`). The optimizer then steps as usual.
   Noise and sample are secret (:mod:`distill.privacy.randomness`), not derived from the public ``seed``.

The student's embeddings (and a tied output layer) are frozen under DP: the student copies them from the
public teacher, so they carry no private information, and freezing them removes the 50257-wide per-sample
gradients. ε is logged as ``dp/epsilon``, saved in every checkpoint and in ``OUTPUT_DIR/privacy.json``.

Own code rather than ``opacus.PrivacyEngine``: opacus' engine wraps model, optimizer and data loader for a
plain training loop; here the Hugging Face ``Trainer`` owns those, records may span several rows, and the
single-backward book-keeping clipper is not in opacus. Opacus supplies the accountants, the Poisson sampler
and the ``hooks``/``ghost`` per-sample gradients.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..errors import ConfigError
from ..outputs import PRIVACY_FILENAME, PRIVACY_STATE_FILENAME, RECORD_ID, TRAINER_STATE_FILENAME
from .accounting import (PrivacyAccountant, accounted_sample_rate, calibrate_noise, compute_epsilon, describe_noise,
                         max_steps_within, resolve_delta)
from .bookkeeping import BookKeepingClipper
from .disclosure import disclosure, strict_json
from .noise import privatize
from .randomness import DPRandomness
from .records import RecordLayout, record_rows
from .sampling import EmptyBatchCollator, RecordBatchSampler, RecordDataLoader

logger = logging.getLogger(__name__)


@dataclass
class DPSettings:
    """What the engine needs from a run's configuration (built from any object with the ``dp_*`` keys)."""

    max_grad_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str = "rdp"
    mode: str = "fast"
    poisson_sampling: bool = True
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_steps: int = -1
    num_train_epochs: float = 1.0
    seed: int = 0
    reproducible: bool = False  # noise and sample from `seed` (not secret): tests and debugging only
    allow_large_delta: bool = False
    student_source: str | None = None  # student_model_name_or_path (None: built from the teacher)
    teacher: str | None = None

    @classmethod
    def from_config(cls, args) -> DPSettings:
        """From a :class:`~distill.distillation.config.DistillationConfig` (or anything with the same attribute names)."""
        return cls(max_grad_norm=args.dp_max_grad_norm, noise_multiplier=args.dp_noise_multiplier,
                   target_epsilon=args.dp_target_epsilon, delta=args.dp_delta, accountant=args.dp_accountant,
                   mode=args.dp_mode, poisson_sampling=args.dp_poisson_sampling,
                   per_device_batch_size=args.per_device_train_batch_size,
                   gradient_accumulation_steps=args.gradient_accumulation_steps, max_steps=args.max_steps,
                   num_train_epochs=args.num_train_epochs,
                   seed=args.data_seed if getattr(args, "data_seed", None) is not None else args.seed,
                   reproducible=getattr(args, "dp_reproducible", False),
                   allow_large_delta=getattr(args, "dp_allow_large_delta", False),
                   student_source=getattr(args, "student_model_name_or_path", None),
                   teacher=getattr(args, "teacher_model_name_or_path", None))


@dataclass
class PrivacyParams:
    """The resolved DP-SGD parameters of a run."""

    num_records: int
    expected_batch_size: int
    sample_rate: float
    steps_per_epoch: int
    planned_steps: int
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    mode: str
    poisson_sampling: bool
    target_epsilon: float | None = None
    max_steps_in_budget: int | None = None
    planned_epsilon: float = field(default=0.0)
    accounted_sample_rate: float | None = None  # q, or 1 without Poisson sampling (no amplification claimed)
    noise_note: str | None = None  # what a weak budget's noise means


def freeze_embeddings(model: nn.Module) -> list[str]:
    """Freeze every embedding table and the (possibly tied) output layer; returns the frozen names."""
    frozen = []
    targets = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        targets.append(out)
    ids = {id(p) for m in targets for p in m.parameters()}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in ids:
            frozen.append(name)
    for m in targets:
        m.requires_grad_(False)
    return frozen


def make_clipper(model: nn.Module, mode: str, max_grad_norm: float):
    """The per-record clipper of ``dp_mode`` (opacus' modes imported only when chosen)."""
    if mode == "fast":
        return BookKeepingClipper(model)
    from .opacus_modes import OpacusGhostClipper, OpacusHooksClipper

    if mode == "hooks":
        return OpacusHooksClipper(model)
    if mode == "ghost":
        return OpacusGhostClipper(model, max_grad_norm)
    raise ConfigError(f"dp_mode must be one of fast, hooks, ghost; got {mode!r}.")


class RecordClipping:
    """One micro-batch's clipping (see :meth:`DPSGDEngine.clipping`): ``backward(per_row_loss)`` once."""

    def __init__(self, engine: DPSGDEngine, layout: RecordLayout):
        self.engine, self.layout = engine, layout
        self.norms: torch.Tensor | None = None
        self.factors: torch.Tensor | None = None

    def backward(self, per_row_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip each record's gradient of ``per_row_loss`` (``[B]``) and add the clipped sum to the step's sum.

        Returns the per-record gradient norms before clipping and the clipping factors (``[R]`` each)."""
        if self.norms is not None:
            raise RuntimeError("RecordClipping.backward runs once per micro-batch.")
        if per_row_loss.dim() != 1 or per_row_loss.shape[0] != self.layout.num_rows:
            raise ValueError(f"per_row_loss must have one value per row ({self.layout.num_rows}), "
                             f"got shape {tuple(per_row_loss.shape)}.")
        e = self.engine
        self.norms, self.factors = e.clipper.clip_and_accumulate(per_row_loss, self.layout, e.settings.max_grad_norm,
                                                                 e.summed)
        return self.norms, self.factors


class DPSGDEngine:
    """DP-SGD state of one training run; see the module docstring.

    Args:
        model: the student, unwrapped (no DDP). Its embeddings are frozen here.
        settings: a :class:`DPSettings`.
    """

    def __init__(self, model: nn.Module, settings: DPSettings):
        self.settings = settings
        self.frozen = freeze_embeddings(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("Under DP the student's embeddings are frozen and nothing else is trainable.")
        self.clipper = make_clipper(model, settings.mode, settings.max_grad_norm)
        self.summed: dict[int, torch.Tensor] = {}
        # secret noise and sample (distill.privacy.randomness); `seed` governs only init, dropout, CDA
        self.randomness = DPRandomness(reproducible=settings.reproducible, seed=settings.seed)
        self.params_resolved: PrivacyParams | None = None
        self.accountant: PrivacyAccountant | None = None
        self._resume_state: dict | None = None
        self.stop_at_step: int | None = None
        self.stopped_reason: str | None = None
        self.callback = PrivacyCallback(self)

    # ------------------------------------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------------------------------------
    def dataloader(self, dataset, collate_fn: Callable, *, num_processes: int = 1, process_index: int = 0,
                   record_ids: list[int] | None = None, num_workers: int = 0,
                   pin_memory: bool = False) -> RecordDataLoader:
        """This process's micro-batches of Poisson-sampled records (an empty draw gives a 0-row batch).

        ``record_ids``: the dataset's ``record_id`` column (default: read from ``dataset`` if it has one; every
        row its own record otherwise)."""
        if dataset is None:
            raise ConfigError("DP training needs a train_dataset.")
        if record_ids is None:
            columns = getattr(dataset, "column_names", None) or []
            record_ids = list(dataset[RECORD_ID]) if RECORD_ID in columns else None
        records = record_rows(record_ids, len(dataset))
        p = self.resolve(len(records), num_processes)
        s = self.settings
        sampler = RecordBatchSampler(records, sample_rate=p.sample_rate, steps_per_epoch=p.steps_per_epoch,
                                     micro_batches=s.gradient_accumulation_steps, num_processes=num_processes,
                                     process_index=process_index, seed=self.randomness.sampling_seed(),
                                     poisson=p.poisson_sampling,
                                     batch_records=p.expected_batch_size)
        return RecordDataLoader(dataset, batch_sampler=sampler, collate_fn=EmptyBatchCollator(collate_fn),
                                num_workers=num_workers, pin_memory=pin_memory)

    def resolve(self, num_records: int, world_size: int) -> PrivacyParams:
        """Sample rate, noise multiplier and budget for this run; clear errors for impossible settings."""
        s = self.settings
        batch = s.per_device_batch_size * s.gradient_accumulation_steps * world_size
        if batch > num_records:
            raise ConfigError(
                f"The logical batch ({batch} records = per_device_train_batch_size × gradient_accumulation_steps × "
                f"processes) is larger than the {num_records} training records: lower the batch size."
            )
        q = batch / num_records
        steps_per_epoch = int(1 / q) if s.poisson_sampling else num_records // batch
        planned = s.max_steps if s.max_steps > 0 else math.ceil(s.num_train_epochs * steps_per_epoch)
        delta = resolve_delta(s.delta, num_records, s.allow_large_delta)
        q_acc = accounted_sample_rate(q, s.poisson_sampling)
        if s.noise_multiplier is not None:
            sigma = float(s.noise_multiplier)
        else:
            sigma = calibrate_noise(s.target_epsilon, delta, q_acc, planned, s.accountant)
        if sigma == 0 and s.target_epsilon is not None:
            raise ConfigError("dp_noise_multiplier 0 gives no privacy (ε = ∞) and cannot meet dp_target_epsilon.")
        if self.accountant is None or self._resume_state is not None:  # a second train() call continues
            self.accountant = PrivacyAccountant(s.accountant, delta)
        if self._resume_state is not None:
            self.accountant.load_state_dict(self._resume_state)
            self._resume_state = None
        if self.accountant.delta != delta:
            raise ConfigError(f"dp_delta changed from {self.accountant.delta} to {delta} within one run.")
        budget = None
        if s.target_epsilon is not None:
            remaining = max_steps_within(s.target_epsilon, sigma, q_acc, delta, s.accountant,
                                         done_history=self.accountant.history) if sigma > 0 else 0
            budget = self.accountant.steps + remaining
            if remaining == 0:
                raise ConfigError(
                    f"One more DP step would exceed dp_target_epsilon={s.target_epsilon} (σ={sigma:.4g}, "
                    f"q={q:.4g}, δ={delta:.3g}, {self.accountant.steps} steps done): raise the target, the noise, or "
                    "lower the batch size."
                )
            if budget < planned:
                logger.warning("DP budget: ε would exceed %.4g after step %d; training will stop there (of %d planned).",
                               s.target_epsilon, budget, planned)
            self.stop_at_step = budget
        planned_eps = compute_epsilon(sigma, q_acc, min(planned, budget or planned), delta, s.accountant) \
            if sigma > 0 else float("inf")
        noise_note = describe_noise(sigma, s.max_grad_norm, batch, planned_eps)
        if noise_note:
            logger.warning("DP budget: %s", noise_note)
        self.params_resolved = PrivacyParams(
            num_records=num_records, expected_batch_size=batch, sample_rate=q, steps_per_epoch=steps_per_epoch,
            planned_steps=planned, noise_multiplier=sigma, max_grad_norm=s.max_grad_norm, delta=delta,
            accountant=s.accountant, mode=s.mode, poisson_sampling=s.poisson_sampling,
            target_epsilon=s.target_epsilon, max_steps_in_budget=budget, planned_epsilon=planned_eps,
            accounted_sample_rate=q_acc, noise_note=noise_note,
        )
        logger.info("DP-SGD: %s", self.params_resolved)
        return self.params_resolved

    # ------------------------------------------------------------------------------------------------
    # the step
    # ------------------------------------------------------------------------------------------------
    @contextmanager
    def clipping(self, model: nn.Module, record_ids: torch.Tensor | None, num_rows: int) -> Iterator[RecordClipping]:
        """Around one non-empty micro-batch: the per-row loss is computed from a forward of ``model`` (the
        unwrapped student) inside the block, then ``clip.backward(per_row_loss)`` clips per record.

        Parameter ``.grad`` is left untouched: the clipped sum goes to the step's running sum."""
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise TypeError("DPSGDEngine.clipping needs the unwrapped student (the engine reduces gradients itself).")
        if num_rows == 0:
            raise ValueError("An empty micro-batch has nothing to clip: skip it (noise_step still runs).")
        clip = RecordClipping(self, RecordLayout(record_ids, num_rows))
        with self.clipper.capture():
            yield clip
        if clip.norms is None:
            raise RuntimeError("The clipping block ended without clip.backward(per_row_loss).")

    def noise_step(self) -> None:
        """Close a logical step on EVERY process (one all-reduce): one noise draw for the global clipped sum,
        set ``.grad`` of the trainable parameters, account for the step."""
        p = self.params_resolved
        privatize(self.params, self.summed, noise_std=p.noise_multiplier * p.max_grad_norm,
                  expected_batch_size=p.expected_batch_size,
                  generator=self.randomness.noise_generator(self.params[0].device))
        self.accountant.step(noise_multiplier=p.noise_multiplier, sample_rate=p.accounted_sample_rate)

    # ------------------------------------------------------------------------------------------------
    # reporting, checkpoints, resume
    # ------------------------------------------------------------------------------------------------
    def epsilon(self) -> float:
        return self.accountant.epsilon() if self.accountant is not None else 0.0

    def log_metrics(self) -> dict[str, float]:
        return {"dp/epsilon": self.epsilon()} if self.accountant is not None else {}

    def summary(self) -> dict[str, Any]:
        p = self.params_resolved
        out = {"epsilon": self.epsilon(), "delta": p.delta, "noise_multiplier": p.noise_multiplier,
               "max_grad_norm": p.max_grad_norm, "sample_rate": p.sample_rate, "steps": self.accountant.steps,
               "accountant": p.accountant, "mode": p.mode, "poisson_sampling": p.poisson_sampling,
               "expected_batch_size": p.expected_batch_size, "num_records": p.num_records,
               "target_epsilon": p.target_epsilon, "stopped_early": self.stopped_reason,
               "history": [list(h) for h in self.accountant.history]}
        s = self.settings
        out.update(disclosure(frozen=self.frozen, student_source=s.student_source, teacher=s.teacher,
                              poisson=p.poisson_sampling, sample_rate=p.sample_rate,
                              randomness=self.randomness.describe(), noise_note=p.noise_note))
        return strict_json(out)

    def write_summary(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, PRIVACY_FILENAME)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(self.summary(), fh, indent=2, allow_nan=False)
        os.replace(path + ".tmp", path)
        return path

    def load_resume_state(self, resume_from_checkpoint, output_dir: str) -> None:
        """Read the accountant history of the checkpoint a run resumes from (before training starts)."""
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(output_dir)
        if not path:
            return
        state = PrivacyAccountant.read(path)  # state_dict() and the step it was saved at
        if state is None:
            parent = os.path.dirname(os.path.normpath(path))
            siblings = [d for d in (os.listdir(parent) if os.path.isdir(parent) else [])
                        if d.startswith("checkpoint-") and os.path.join(parent, d) != os.path.normpath(path)]
            if any(os.path.isfile(os.path.join(parent, d, PRIVACY_STATE_FILENAME)) for d in siblings):
                raise ConfigError(f"Checkpoint {path} is incomplete: its privacy state ({PRIVACY_STATE_FILENAME}) is "
                                  "missing while the run's other checkpoints have one (its save was cut short). "
                                  "Resume from an earlier complete checkpoint (--resume_from_checkpoint "
                                  f"{parent}/checkpoint-N).")
            raise ConfigError(f"Checkpoint {path} has no privacy state ({PRIVACY_STATE_FILENAME}), so the privacy cost "
                              "of its steps is unknown: either its save was cut short (resume from an earlier "
                              "complete checkpoint) or it was trained without DP (resume it without dp_enabled, or "
                              "start a new run).")
        trainer_state = os.path.join(path, TRAINER_STATE_FILENAME)
        if os.path.isfile(trainer_state):
            with open(trainer_state, encoding="utf-8") as fh:
                step = json.load(fh).get("global_step")
            done = sum(int(h[2]) for h in state.get("history", []))
            if step is not None and step != done:
                raise ConfigError(f"Checkpoint {path} is at step {step} but its privacy accountant has {done} steps: "
                                  "the privacy state does not belong to this checkpoint.")
        self.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """The accountant's state (mechanism, δ, history): what a checkpoint needs to continue the ε curve."""
        return self.accountant.state_dict() if self.accountant is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved :meth:`state_dict`; checked against this run's settings when data is resolved."""
        self._resume_state = dict(state)


class PrivacyCallback(TrainerCallback):
    """Saves the accountant in checkpoints, stops at the budget, writes ``privacy.json`` at the end."""

    def __init__(self, engine: DPSGDEngine):
        self.engine = engine

    def on_step_end(self, args, state, control, **kwargs):
        e = self.engine
        if e.stop_at_step is not None and state.global_step >= e.stop_at_step and state.global_step < state.max_steps:
            e.stopped_reason = (f"stopped at step {state.global_step} of {state.max_steps}: one more step would exceed "
                                f"dp_target_epsilon={e.settings.target_epsilon} (ε now {e.epsilon():.4g})")
            logger.warning("DP budget reached: %s. The model trained so far is saved.", e.stopped_reason)
            control.should_training_stop = True
            control.should_save = control.should_save or args.save_strategy != "no"
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.engine.accountant is not None:
            ckpt = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if os.path.isdir(ckpt):
                self.engine.accountant.save(ckpt, extra={"global_step": state.global_step})
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.engine.accountant is not None:
            self.engine.write_summary(args.output_dir)
        return control
