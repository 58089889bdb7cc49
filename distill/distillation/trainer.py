"""`DistillationTrainer`: a `transformers.Trainer` that distils a frozen teacher into a student.

The trainer orchestrates; the maths lives in pure functions (:mod:`distill.distillation.losses`,
:mod:`distill.distillation.fused_loss`, :mod:`distill.distillation.teacher_side`, and the counterfactual
perturbation in :mod:`distill.counterfactual`). Per step it

1. runs the student on the batch,
2. gets the teacher's side of the loss (:meth:`DistillationTrainer.teacher_outputs`: dense, split or cached):
   the frozen teacher (eval mode, no grad, optionally bf16/fp16) runs on the same batch — and, with
   counterfactual role reversal, on the gender-swapped rows in the same forward pass — unless a teacher cache
   holds its targets,
3. combines ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)`` over non-padding positions
   (:func:`~distill.distillation.losses.combine_losses`), through both output layers in chunks where they split
   off exactly (the fused loss) or through the student's logits,
4. logs ``loss_kd``, ``loss_lm``, ``loss_cos`` (and ``crr_swapped_share``) through the Trainer's logging.

One loss method, :meth:`DistillationTrainer.distillation_step_loss`, serves both the usual step (a batch mean,
through ``compute_loss``) and DP-SGD (one loss per row, which :class:`~distill.privacy.DPSGDEngine` clips per
record). With DP the trainer owns the step and calls the engine around it; the engine never sees the trainer.

Several processes: every process takes part in the same collectives every step, whatever its data. The loss
components are summed locally (value × rows, rows) and reduced across processes once per logging step, in
:meth:`DistillationTrainer.log`; a DP micro-batch with no record contributes nothing but still reaches the
noise step's all-reduce. Which ``accelerate`` engines are supported: :mod:`distill.distillation.parallel`.

Evaluation reports the student's own next-token loss and ``eval_perplexity``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from .config import DistillationConfig
from ..errors import ConfigError
from ..outputs import CACHE_ROW, CONFIG_FILENAME, RECORD_ID, TRAINING_ARGS_FILENAME
from ..text_data import DistillationCollator
from .aligned_logits import aligns, linear_logits
from .fused_loss import fused_distillation_loss, prefers_plain_loss
from .losses import distillation_loss, lm_loss
from .lean import lean_student, lean_teacher
from .models import build_models
from .parallel import check_parallel_engine
from .teacher_side import CachedTeacherSide, TeacherOutputs, hidden_output_layer, no_logits, run_teacher, \
    split_output_layer

logger = logging.getLogger(__name__)

#: Batch keys the student and teacher forward passes consume.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")


class DistillationTrainer(Trainer):
    """Knowledge distillation of causal LMs with optional counterfactual role reversal and DP-SGD.

    Args:
        model: the student. ``None`` builds one from the teacher (``args.student_layers`` /
            ``args.student_num_layers``) or loads ``args.student_model_name_or_path``.
        args: a :class:`~distill.distillation.config.DistillationConfig`.
        teacher_model: the teacher, as a model or a Hub name / local path (default:
            ``args.teacher_model_name_or_path``).
        Other arguments are those of :class:`transformers.Trainer`.
    """

    def __init__(self, model: PreTrainedModel | None = None, args: DistillationConfig | None = None,
                 teacher_model: PreTrainedModel | str | None = None, data_collator=None,
                 processing_class=None, **kwargs):
        if args is None:
            args = DistillationConfig(output_dir="runs/distill")
        if not isinstance(args, DistillationConfig):
            raise TypeError("DistillationTrainer needs a DistillationConfig as `args`.")
        check_parallel_engine(args)  # before loading anything (distill.distillation.parallel)
        teacher_model, model, processing_class = build_models(args, teacher=teacher_model, student=model,
                                                              tokenizer=processing_class)
        if data_collator is None:
            data_collator = DistillationCollator(pad_token_id=processing_class.pad_token_id)
        lean_student(model)  # same function, fewer activations kept (distill.distillation.lean)

        super().__init__(model=model, args=args, data_collator=data_collator,
                         processing_class=processing_class, **kwargs)
        # compute_loss returns a per-batch mean: let the Trainer divide it over accumulation steps.
        self.loss_is_scaled_for_ga = False
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:  # as the accelerator sees it (any config source)
            plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
            check_parallel_engine(args, ("fsdp", None) if self.is_fsdp_enabled
                                  else ("deepspeed", getattr(plugin, "zero_stage", None)))
        # training metrics: name -> (Σ value × rows, Σ rows) on this process, reduced in `log`
        self._metric_totals: dict[str, tuple[torch.Tensor, int]] = {}
        self._unlogged: set[str] = set()
        self._metric_names: list[str] = [name for name, on in (
            ("loss_kd", args.alpha_kd > 0), ("loss_lm", args.alpha_lm > 0), ("loss_cos", args.alpha_cos > 0),
            ("crr_swapped_share", args.perturbation != "none" and args.alpha_kd > 0)) if on]

        teacher_model.eval()
        teacher_model.requires_grad_(False)
        lean_teacher(teacher_model)  # the same function in fewer kernels (distill.distillation.lean)
        # Like the student, the teacher goes through accelerate (device placement; no DDP wrapper for
        # a model that only runs inference).
        self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self.teacher.eval()
        # body + output layer when that is exact and accelerate did not wrap the teacher (FSDP, ...)
        unwrapped = self.accelerator.unwrap_model(self.teacher)
        with self.accelerator.autocast():  # the probe compares with the forward, which runs under bf16/fp16 autocast
            self._teacher_split = split_output_layer(unwrapped) if unwrapped is self.teacher else None
        # the loss through both output layers in chunks (fused_loss) when both split off exactly (and are not sharded)
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        self._student_head = hidden_output_layer(self.model) if args.loss_chunk_size != "off" and not sharded else None
        self._fused_by_shape: dict[tuple[int, int], bool] = {}  # loss_chunk_size auto: (rows, length) -> fused
        if args.gradient_checkpointing or getattr(args, "activation_checkpointing", False):
            self._enable_gradient_checkpointing()
        self._setup_counterfactual()
        self.teacher_cache = None
        if args.teacher_cache:  # stored (perturbed) targets replace the teacher forward; checked before training
            from .teacher_cache import TeacherCache

            self.teacher_cache = TeacherCache.for_trainer(self)
        # DP-SGD (distill.privacy): records sampler, per-record clipping, noise and accounting; the step is ours.
        self.privacy = None
        if args.dp_enabled:
            from ..privacy import DPSettings, DPSGDEngine

            self.privacy = DPSGDEngine(self.accelerator.unwrap_model(self.model), DPSettings.from_config(args))
            self.add_callback(self.privacy.callback)

    def _enable_gradient_checkpointing(self) -> None:
        """Checkpoint the student's blocks from the start (the Trainer would only at ``train()``, and the DP step
        and the benchmarks call ``training_step`` directly), non-reentrant unless ``gradient_checkpointing_kwargs``
        says otherwise: each block is recomputed in backward within the one autograd graph, so the fused loss
        (which takes its own gradients inside the forward), ``torch.autograd.grad`` on layer outputs (DP fast
        mode) and inputs that need no gradient all work unchanged."""
        kwargs = dict(self.args.activation_checkpointing_kwargs or self.args.gradient_checkpointing_kwargs or {})
        kwargs.setdefault("use_reentrant", False)
        self.args.activation_checkpointing_kwargs = kwargs
        student = self.accelerator.unwrap_model(self.model)
        student.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)

    # ------------------------------------------------------------------------------------------------
    # hooks for counterfactual role reversal (see distill.counterfactual)
    # ------------------------------------------------------------------------------------------------
    def _setup_counterfactual(self) -> None:
        """Build the token swapper (vocabulary permutation R) used by teacher-prediction perturbation."""
        self.token_swapper = None
        self.token_permutation = None
        if self.args.perturbation == "none":
            return
        from ..counterfactual.lexicon import load_lexicon
        from ..counterfactual.token_pairs import TokenSwapper

        if self.args.alpha_kd == 0:
            logger.warning("perturbation=%s changes the KD targets only, but alpha_kd is 0: it has no effect.",
                           self.args.perturbation)
        teacher = self.accelerator.unwrap_model(self.teacher)
        vocab_size = teacher.get_output_embeddings().weight.shape[0]
        lexicon = load_lexicon(names=bool(self.args.cda_names), pairs_file=self.args.cda_pairs_file)
        swapper = TokenSwapper.from_tokenizer(self.processing_class, vocab_size, lexicon)
        if swapper.num_pairs == 0:
            raise ConfigError("perturbation needs gendered word pairs that are single tokens of the tokenizer, "
                              "and this tokenizer has none: set perturbation: none.")
        self.token_swapper = swapper.to(self.args.device)
        self.token_permutation = self.token_swapper.perm

    def _set_signature_columns_if_needed(self) -> None:
        # private Trainer hook (no public way to keep extra columns): tested with transformers 5.24
        super()._set_signature_columns_if_needed()
        extra = [c for c in ("labels", RECORD_ID, CACHE_ROW) if c not in self._signature_columns]
        self._signature_columns = list(self._signature_columns) + extra

    # ------------------------------------------------------------------------------------------------
    # differential privacy: the engine samples records, clips and adds noise; the step is the trainer's
    # ------------------------------------------------------------------------------------------------
    def get_train_dataloader(self):
        if self.privacy is None:
            return super().get_train_dataloader()
        # Trainer._remove_unused_columns is private API (tested with transformers 5.24)
        dataset = self._remove_unused_columns(self.train_dataset, description="training") \
            if self.train_dataset is not None else None
        return self.privacy.dataloader(
            dataset, self.data_collator, num_processes=self.accelerator.num_processes,
            process_index=self.accelerator.process_index, num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory)

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None):
        if self.privacy is None:
            return super().training_step(model, inputs, num_items_in_batch)
        return self.dp_training_step(model, inputs)

    def dp_training_step(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One DP-SGD micro-batch: per-row loss, per-record clipping; the logical step's last micro-batch adds
        the noise (one all-reduce on every process, even one whose micro-batch drew no record).

        The student runs unwrapped: DDP's gradient all-reduce and buffer broadcasts never run under DP (the
        engine reduces the clipped sums), so no collective depends on whether this process has data."""
        student = self.accelerator.unwrap_model(model)
        student.train()
        inputs = self._prepare_inputs(inputs)  # Trainer API (device placement), as Trainer.training_step uses it
        rows = inputs["input_ids"].shape[0]
        if rows > 0:
            with self.privacy.clipping(student, inputs.get(RECORD_ID), rows) as clip:
                with self.compute_loss_context_manager():
                    row_loss, parts, _ = self.distillation_step_loss(student, inputs, per_row=True)
                clip.backward(row_loss)
            self._record_metrics(parts, rows)
            loss = row_loss.detach().mean()
        else:  # Poisson drew no record for this micro-batch of this process
            loss = torch.zeros((), device=self.args.device)
        if self.accelerator.gradient_state.sync_gradients:
            self.privacy.noise_step()
        return loss / max(1, getattr(self, "current_gradient_accumulation_steps", 1))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if self.privacy is not None:
            self.privacy.load_resume_state(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ------------------------------------------------------------------------------------------------
    # teacher
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_outputs(self, inputs: dict[str, torch.Tensor], need_hidden: bool = False,
                        lazy: bool = False) -> TeacherOutputs:
        """The teacher's side of the loss for the batch (:mod:`distill.distillation.teacher_side`), its last hidden
        states if asked and, with counterfactual role reversal, the number of swapped rows.

        With a teacher cache the side is the stored target and the teacher does not run. Otherwise it is the
        frozen teacher's (perturbed) target: its final hidden states and output layer when ``lazy`` and the teacher
        splits exactly (the fused loss computes the targets chunk by chunk), else ``[B, T, V]`` log-probabilities
        (the temperature dividing the hidden states when the teacher splits)."""
        if self.teacher_cache is not None:  # the stored target: top-k + tail, perturbation already applied
            return TeacherOutputs(CachedTeacherSide(self.teacher_cache.targets(inputs)))
        args = self.args
        model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
        with self.accelerator.autocast():  # as the plain forward (prepare_model wraps it) under bf16/fp16
            return run_teacher(self.teacher, model_inputs, temperature=args.temperature, split=self._teacher_split,
                               swapper=self.token_swapper if args.alpha_kd > 0 else None, mode=args.perturbation,
                               lam=args.perturbation_lambda, need_hidden=need_hidden, lazy=lazy)

    def teacher_targets(self, inputs: dict[str, torch.Tensor], need_hidden: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's whole target — ``[B, T, V]`` temperature-softened (perturbed) log-probabilities, or the
        cache's sparse target — and the last hidden states if asked: :meth:`teacher_outputs` read at once
        (what :mod:`distill.distillation.teacher_cache` stores)."""
        side, hidden, _ = self.teacher_outputs(inputs, need_hidden)
        return side.log_probs(), hidden

    # ------------------------------------------------------------------------------------------------
    # loss
    # ------------------------------------------------------------------------------------------------
    def uses_fused_loss(self, inputs: dict[str, Any] | None = None) -> bool:
        """Whether the loss runs through both output layers in chunks (:mod:`distill.distillation.fused_loss`):
        the student's output layer splits off (``loss_chunk_size`` not ``off``, no sharding), and so does the
        teacher's when a term reads the teacher and there is no cache; with ``loss_chunk_size: auto`` and a batch
        (``inputs``), always on an accelerator, and on a CPU only where the plain loss's ``[B, T, V]`` tensors
        would not fit well within the memory available (:func:`~distill.distillation.fused_loss.prefers_plain_loss`;
        decided once per batch shape)."""
        args = self.args
        can = self._student_head is not None and (
            self.teacher_cache is not None or self._teacher_split is not None
            or (args.alpha_kd == 0 and args.alpha_cos == 0))
        if not can or args.loss_chunk_size != "auto" or inputs is None:
            return can
        ids = inputs["input_ids"]
        rows = ids.shape[0] * (1 + (self.token_swapper is not None and args.alpha_kd > 0))  # CRR: x̃ rows too
        key = (rows, ids.shape[-1])
        if key not in self._fused_by_shape:
            self._fused_by_shape[key] = not prefers_plain_loss(rows * ids.shape[-1],
                                                               self._student_head.weight.shape[0], ids.device)
        return self._fused_by_shape[key]

    def fused_loss(self, model: nn.Module, inputs: dict[str, Any], per_row: bool = False):
        """:meth:`distillation_step_loss` through the fused loss, or ``None`` where it does not apply
        (:meth:`uses_fused_loss`)."""
        return self.distillation_step_loss(model, inputs, per_row, fused=True) if self.uses_fused_loss() else None

    def distillation_step_loss(self, model: nn.Module, inputs: dict[str, Any], per_row: bool = False,
                               fused: bool | None = None):
        """Student and teacher forward on a batch, and ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)``.

        Returns ``(loss, parts, student_outputs)``: the loss is the mean over the batch's counted tokens, or with
        ``per_row=True`` one loss per row ``[B]`` (each row's own token mean: what DP-SGD clips); ``parts`` are
        the detached batch means of the terms (and ``crr_swapped_share`` with role reversal). ``fused``: through
        both output layers in chunks where :meth:`uses_fused_loss` (``None``: as ``loss_chunk_size`` decides for
        this batch; ``True``: wherever the output layers split off)
        (:func:`~distill.distillation.fused_loss.fused_distillation_loss`: the same loss and gradients without any
        ``[B, T, V]`` tensor; the student's outputs hold no logits), else through the logits
        (:func:`~distill.distillation.losses.distillation_loss`)."""
        args = self.args
        fused = fused is not False and self.uses_fused_loss(None if fused else inputs)
        need_hidden = args.alpha_cos > 0
        model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
        # the plain loss's student logits through the aligned output layer where it applies (a CPU, float32, no DP
        # hooks to feed, no autocast): the forward stops before its output layer, as for the fused loss
        aligned_head = None
        if not fused and self._student_head is not None and self.privacy is None and not (args.bf16 or args.fp16) \
                and aligns(self._student_head):
            aligned_head = self._student_head
        if fused or aligned_head is not None:
            outputs = model(**model_inputs, output_hidden_states=True,
                            logits_to_keep=no_logits(inputs["labels"].device))
        else:
            outputs = model(**model_inputs, output_hidden_states=need_hidden)
        if aligned_head is not None:
            outputs["logits"] = linear_logits(aligned_head, outputs.hidden_states[-1])
        teacher = TeacherOutputs()
        if args.alpha_kd > 0 or need_hidden:  # (a teacher cache refuses alpha_cos)
            teacher = self.teacher_outputs(inputs, need_hidden, lazy=fused)
        kw = dict(temperature=args.temperature, alpha_kd=args.alpha_kd, alpha_lm=args.alpha_lm,
                  alpha_cos=args.alpha_cos, teacher_hidden=teacher.hidden, per_row=per_row, **args.kd_kwargs())
        if fused:
            with self.accelerator.autocast():
                loss, parts = fused_distillation_loss(
                    outputs.hidden_states[-1], self._student_head, teacher.side, inputs["labels"],
                    inputs.get("attention_mask"),
                    chunk_size=None if args.loss_chunk_size == "auto" else args.loss_chunk_size, **kw)
        else:
            loss, parts = distillation_loss(
                outputs.logits, teacher.side.log_probs() if teacher.side is not None else None, inputs["labels"],
                inputs.get("attention_mask"), student_hidden=outputs.hidden_states[-1] if need_hidden else None,
                **kw)
        if teacher.n_swapped is not None:
            parts["crr_swapped_share"] = torch.tensor(teacher.n_swapped / model_inputs["input_ids"].size(0))
        return loss, parts, outputs

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        loss, parts, outputs = self.distillation_step_loss(model, inputs, fused=False if return_outputs else None)
        self._record_metrics(parts, inputs["input_ids"].shape[0])
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------------------------------------
    # logging: local sums per micro-batch, one all-reduce per logging step
    # ------------------------------------------------------------------------------------------------
    def _record_metrics(self, parts: dict[str, torch.Tensor], rows: int) -> None:
        """Add a training micro-batch's loss components (batch means over ``rows`` rows) to the local sums.
        No collective here: they are reduced in :meth:`log`, on every process at the same steps."""
        if not self.model.training or rows == 0:
            return
        for name, value in parts.items():
            if name not in self._metric_names:
                if self.accelerator.num_processes > 1:  # every process must reduce the same names: fixed at init
                    if name not in self._unlogged:
                        logger.warning("Loss component %s is not logged with several processes (the logged names "
                                       "are fixed at start-up).", name)
                        self._unlogged.add(name)
                    continue
                self._metric_names.append(name)
            total, count = self._metric_totals.get(name, (0.0, 0))
            self._metric_totals[name] = (total + value.detach().float() * rows, count + rows)

    def _reduce_metrics(self) -> dict[str, float]:
        """Row-weighted means of the components since the last logging step, over all processes (one
        all-reduce of sums and counts; a process without data adds zeros)."""
        names = self._metric_names
        totals = torch.zeros(2 * len(names), dtype=torch.float64, device=self.args.device)
        for i, name in enumerate(names):
            if name in self._metric_totals:
                total, count = self._metric_totals[name]
                totals[i] = torch.as_tensor(total, dtype=torch.float64, device=totals.device)
                totals[len(names) + i] = count
        self._metric_totals.clear()
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        values = totals.tolist()
        return {name: values[i] / values[len(names) + i] for i, name in enumerate(names) if values[len(names) + i] > 0}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log, plus the loss components (at training-step logs, which every process makes at the
        same steps) and ``dp/epsilon``. Other logs (evaluation, fairness) pass through unchanged."""
        training = "loss" in logs or "train_loss" in logs
        extra = self._reduce_metrics() if "loss" in logs else {}
        if training and getattr(self, "privacy", None) is not None:
            extra.update(self.privacy.log_metrics())
        super().log({**logs, **extra}, start_time)

    # ------------------------------------------------------------------------------------------------
    # evaluation: the student's own next-token loss and perplexity
    # ------------------------------------------------------------------------------------------------
    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
            logits = model(**model_inputs).logits
            loss = lm_loss(logits, inputs["labels"]).detach()
        return loss, None, None

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"):
        """The Trainer's evaluation loop, plus ``{prefix}_perplexity = exp(loss)``."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        prefix = metric_key_prefix
        loss = output.metrics.get(f"{prefix}_loss")
        if loss is not None:
            output.metrics[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
        return output

    # ------------------------------------------------------------------------------------------------
    # Hub: one push after training, with the model card and reports (distill.hub), never checkpoints
    # ------------------------------------------------------------------------------------------------
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No network at start-up: the repo is created by the push after training (:mod:`distill.hub`)."""
        self.hub_model_id = self.args.hub_model_id
        self.push_in_progress = None

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoints (optimizer, scheduler and RNG states) are never uploaded."""
        # private Trainer hook, overridden to do nothing: tested with transformers 5.24

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Save the student to ``output_dir`` and push it with its model card and reports (see distill.hub)."""
        from ..hub.push import publish_run

        self.save_student()
        if not self.is_world_process_zero():
            return None
        return publish_run(self.args, push=True, commit_message=commit_message, token=token, revision=revision,
                           private=private)

    def save_student(self, output_dir: str | None = None) -> None:
        """Write model (safetensors), tokenizer and ``distill_config.yaml`` to ``output_dir`` via a temp dir.

        Only the main process writes. Files are moved into place once all of them are written, so an
        interrupted save never leaves a half-written model next to a previous good one."""
        out = output_dir or self.args.output_dir
        if not self.is_world_process_zero():
            return
        os.makedirs(out, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".saving-", dir=out)
        try:
            # _internal_call (private argument): no Trainer Hub push; tested with transformers 5.24
            self.save_model(tmp, _internal_call=True)  # model + tokenizer, safetensors
            self.args.save_yaml(os.path.join(tmp, CONFIG_FILENAME))
            for name in os.listdir(tmp):
                if name == TRAINING_ARGS_FILENAME:  # pickle; the YAML config replaces it
                    os.remove(os.path.join(tmp, name))
                    continue
                os.replace(os.path.join(tmp, name), os.path.join(out, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
