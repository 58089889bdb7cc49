"""`PrivacyEngine`: DP-SGD for :class:`~distill.trainer.DistillationTrainer` (the trainer delegates to it).

What it does, per logical step (``gradient_accumulation_steps × num_processes`` micro-batches):

1. data — records are Poisson-sampled with rate ``q = per_device_batch × accumulation × processes / records``
   (:mod:`distill.privacy.sampling`); all rows of a record stay together;
2. each micro-batch — one forward of student and (frozen) teacher, the loss of each row
   (:mod:`distill.privacy.loss`), per-record gradients clipped to ``dp_max_grad_norm`` and summed
   (``fast``: :mod:`distill.privacy.bookkeeping`; ``hooks``/``ghost``: :mod:`distill.privacy.opacus_modes`);
   DDP's gradient all-reduce is switched off (``no_sync``): the engine reduces the clipped sums itself;
3. the last micro-batch — the clipped sums of all processes are summed with one Gaussian draw
   ``N(0, σ²C²)`` and divided by the expected batch size (:mod:`distill.privacy.noise`); the accountant
   records the step (:mod:`distill.privacy.accounting`). The Trainer's optimizer then steps as usual.

The student's embeddings (and a tied output layer) are frozen under DP: the student copies them from the
public teacher, so they carry no private information, and freezing them removes the 50257-wide per-sample
gradients. ε is logged as ``dp/epsilon``, saved in every checkpoint and in ``OUTPUT_DIR/privacy.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..errors import ConfigError
from .accounting import PrivacyAccountant, calibrate_noise, compute_epsilon, max_steps_within
from .bookkeeping import BookKeepingClipper
from .loss import per_row_distillation_loss
from .noise import privatize
from .opacus_modes import OpacusGhostClipper, OpacusHooksClipper
from .records import RecordLayout, record_rows
from .sampling import EmptyBatchCollator, RecordBatchSampler, RecordDataLoader

logger = logging.getLogger(__name__)

#: Summary of a DP run, written to the output directory (read by the model card).
PRIVACY_FILENAME = "privacy.json"
RECORD_ID_COLUMN = "record_id"


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


class PrivacyEngine:
    """DP-SGD state of one training run; see the module docstring."""

    def __init__(self, trainer):
        args = trainer.args
        self.args = args
        model = trainer.model
        self.frozen = freeze_embeddings(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("Under DP the student's embeddings are frozen and nothing else is trainable.")
        if args.dp_mode == "fast":
            self.clipper = BookKeepingClipper(model)
        elif args.dp_mode == "hooks":
            self.clipper = OpacusHooksClipper(model)
        else:
            self.clipper = OpacusGhostClipper(model, args.dp_max_grad_norm)
        self.summed: dict[int, torch.Tensor] = {}
        self.params_resolved: PrivacyParams | None = None
        self.accountant: PrivacyAccountant | None = None
        self._resume_state: dict | None = None
        self.stop_at_step: int | None = None
        self.stopped_reason: str | None = None
        self.callback = PrivacyCallback(self)

    # ------------------------------------------------------------------------------------------------
    # data and parameters
    # ------------------------------------------------------------------------------------------------
    def train_dataloader(self, trainer) -> RecordDataLoader:
        args, dataset = self.args, trainer.train_dataset
        if dataset is None:
            raise ConfigError("DP training needs a train_dataset.")
        columns = getattr(dataset, "column_names", None) or []
        ids = list(dataset[RECORD_ID_COLUMN]) if RECORD_ID_COLUMN in columns else None
        records = record_rows(ids, len(dataset))
        world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
        p = self.resolve(len(records), world)
        sampler = RecordBatchSampler(records, sample_rate=p.sample_rate, steps_per_epoch=p.steps_per_epoch,
                                     micro_batches=args.gradient_accumulation_steps, num_processes=world,
                                     process_index=rank, seed=args.data_seed if args.data_seed is not None else args.seed,
                                     poisson=p.poisson_sampling, batch_records=p.expected_batch_size)
        dataset = trainer._remove_unused_columns(dataset, description="training")
        return RecordDataLoader(dataset, batch_sampler=sampler, collate_fn=EmptyBatchCollator(trainer.data_collator),
                                num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory)

    def resolve(self, num_records: int, world_size: int) -> PrivacyParams:
        """Sample rate, noise multiplier and budget for this run; clear errors for impossible settings."""
        args = self.args
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size
        if batch > num_records:
            raise ConfigError(
                f"The logical batch ({batch} records = per_device_train_batch_size × gradient_accumulation_steps × "
                f"processes) is larger than the {num_records} training records: lower the batch size."
            )
        q = batch / num_records
        steps_per_epoch = int(1 / q) if args.dp_poisson_sampling else num_records // batch
        planned = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        delta = args.dp_delta if args.dp_delta is not None else 1.0 / num_records
        if args.dp_noise_multiplier is not None:
            sigma = float(args.dp_noise_multiplier)
        else:
            sigma = calibrate_noise(args.dp_target_epsilon, delta, q, planned, args.dp_accountant)
        if sigma == 0 and args.dp_target_epsilon is not None:
            raise ConfigError("dp_noise_multiplier 0 gives no privacy (ε = ∞) and cannot meet dp_target_epsilon.")
        if self.accountant is None or self._resume_state is not None:  # a second train() call continues
            self.accountant = PrivacyAccountant(args.dp_accountant, delta)
        if self._resume_state is not None:
            self.accountant.load_state_dict(self._resume_state)
            self._resume_state = None
        if self.accountant.delta != delta:
            raise ConfigError(f"dp_delta changed from {self.accountant.delta} to {delta} within one run.")
        budget = None
        if args.dp_target_epsilon is not None:
            remaining = max_steps_within(args.dp_target_epsilon, sigma, q, delta, args.dp_accountant,
                                         done_history=self.accountant.history) if sigma > 0 else 0
            budget = self.accountant.steps + remaining
            if remaining == 0:
                raise ConfigError(
                    f"One more DP step would exceed dp_target_epsilon={args.dp_target_epsilon} (σ={sigma:.4g}, "
                    f"q={q:.4g}, δ={delta:.3g}, {self.accountant.steps} steps done): raise the target, the noise, or "
                    "lower the batch size."
                )
            if budget < planned:
                logger.warning("DP budget: ε would exceed %.4g after step %d; training will stop there (of %d planned).",
                               args.dp_target_epsilon, budget, planned)
            self.stop_at_step = budget
        planned_eps = compute_epsilon(sigma, q, min(planned, budget or planned), delta, args.dp_accountant) \
            if sigma > 0 else float("inf")
        self.params_resolved = PrivacyParams(
            num_records=num_records, expected_batch_size=batch, sample_rate=q, steps_per_epoch=steps_per_epoch,
            planned_steps=planned, noise_multiplier=sigma, max_grad_norm=args.dp_max_grad_norm, delta=delta,
            accountant=args.dp_accountant, mode=args.dp_mode, poisson_sampling=args.dp_poisson_sampling,
            target_epsilon=args.dp_target_epsilon, max_steps_in_budget=budget, planned_epsilon=planned_eps,
        )
        logger.info("DP-SGD: %s", self.params_resolved)
        return self.params_resolved

    # ------------------------------------------------------------------------------------------------
    # the step
    # ------------------------------------------------------------------------------------------------
    def forward(self, trainer, model: nn.Module, inputs: dict[str, Any]):
        """Per-row distillation losses ``[B]`` and the batch means of their terms."""
        from ..trainer import MODEL_INPUT_KEYS

        args = trainer.args
        need_hidden = args.alpha_cos > 0
        model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
        outputs = model(**model_inputs, output_hidden_states=need_hidden)
        teacher_logprobs, teacher_hidden = None, None
        if args.alpha_kd > 0 or need_hidden:
            teacher_logprobs, teacher_hidden = trainer.teacher_targets(inputs, need_hidden=need_hidden)
        return per_row_distillation_loss(
            outputs.logits, teacher_logprobs, inputs["labels"], inputs.get("attention_mask"),
            temperature=args.temperature, alpha_kd=args.alpha_kd, alpha_lm=args.alpha_lm, alpha_cos=args.alpha_cos,
            student_hidden=outputs.hidden_states[-1] if need_hidden else None, teacher_hidden=teacher_hidden,
            **args.kd_kwargs(),
        )

    def clip_batch(self, trainer, model: nn.Module, inputs: dict[str, Any]):
        """Forward, per-record clipping, accumulation into the running sum. Returns (mean row loss, norms, factors)."""
        layout = RecordLayout(inputs.get(RECORD_ID_COLUMN), inputs["input_ids"].shape[0])
        sync = model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else nullcontext()
        with sync:
            with trainer.compute_loss_context_manager(), self.clipper.capture():
                row_loss, parts = self.forward(trainer, model, inputs)
            norms, factors = self.clipper.clip_and_accumulate(row_loss, layout, self.args.dp_max_grad_norm,
                                                              self.summed)
        trainer._record_metrics(parts)
        return row_loss.detach().mean(), norms, factors

    def noise_step(self) -> None:
        """Close a logical step: one noise draw for the global clipped sum, then account for it."""
        p = self.params_resolved
        privatize(self.params, self.summed, noise_std=p.noise_multiplier * p.max_grad_norm,
                  expected_batch_size=p.expected_batch_size)
        self.accountant.step(noise_multiplier=p.noise_multiplier, sample_rate=p.sample_rate)

    def training_step(self, trainer, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None):
        model.train()
        inputs = trainer._prepare_inputs(inputs)
        if inputs["input_ids"].shape[0] > 0:
            loss, _, _ = self.clip_batch(trainer, model, inputs)
        else:  # an empty Poisson micro-batch: nothing to clip, noise still comes at the step's end
            loss = torch.zeros((), device=trainer.args.device)
        if trainer.accelerator.gradient_state.sync_gradients:
            self.noise_step()
        return loss / max(1, getattr(trainer, "current_gradient_accumulation_steps", 1))

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
               "target_epsilon": p.target_epsilon, "privacy_unit": "record (all rows sharing a record_id)",
               "frozen_parameters": self.frozen, "stopped_early": self.stopped_reason,
               "history": [list(h) for h in self.accountant.history]}
        return out

    def write_summary(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, PRIVACY_FILENAME)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(self.summary(), fh, indent=2)
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
        state = PrivacyAccountant.read(path)
        if state is None:
            raise ConfigError(f"Checkpoint {path} has no privacy state (privacy_state.json): it was not trained with "
                              "DP, so its privacy cost is unknown. Resume it without dp_enabled, or start a new run.")
        trainer_state = os.path.join(path, "trainer_state.json")
        if os.path.isfile(trainer_state):
            with open(trainer_state, encoding="utf-8") as fh:
                step = json.load(fh).get("global_step")
            done = sum(int(h[2]) for h in state.get("history", []))
            if step is not None and step != done:
                raise ConfigError(f"Checkpoint {path} is at step {step} but its privacy accountant has {done} steps: "
                                  "the privacy state does not belong to this checkpoint.")
        self._resume_state = state


class PrivacyCallback(TrainerCallback):
    """Saves the accountant in checkpoints, stops at the budget, writes ``privacy.json`` at the end."""

    def __init__(self, engine: PrivacyEngine):
        self.engine = engine

    def on_step_end(self, args, state, control, **kwargs):
        e = self.engine
        if e.stop_at_step is not None and state.global_step >= e.stop_at_step and state.global_step < state.max_steps:
            e.stopped_reason = (f"stopped at step {state.global_step} of {state.max_steps}: one more step would exceed "
                                f"dp_target_epsilon={args.dp_target_epsilon} (ε now {e.epsilon():.4g})")
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


def params_dict(params: PrivacyParams) -> dict[str, Any]:
    return asdict(params)
