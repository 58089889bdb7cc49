"""`DistillationTrainer`: a `transformers.Trainer` that distils a frozen teacher into a student.

The trainer orchestrates; the maths lives in pure functions (:mod:`distill.losses`, and the
counterfactual perturbation in :mod:`distill.counterfactual`). Per step it

1. runs the student on the batch,
2. runs the frozen teacher (eval mode, no grad, optionally bf16/fp16) on the same batch — and, with
   counterfactual role reversal, on the gender-swapped batch in the same forward pass,
3. combines ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)`` over non-padding positions,
4. logs ``loss_kd``, ``loss_lm``, ``loss_cos`` through the Trainer's logging.

Evaluation reports the student's own next-token loss and ``eval_perplexity``.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from .config import DistillationConfig
from .counterfactual.teacher_forward import role_reversed_teacher_targets
from .data import DistillationCollator
from .errors import ConfigError
from .losses import distillation_loss, lm_loss, teacher_log_probs
from .models import load_causal_lm, load_tokenizer, maybe_load_tokenizer
from .student import build_student, check_compatible
from .teacher_head import output_log_probs, split_output_layer

logger = logging.getLogger(__name__)

#: Batch keys the student and teacher forward passes consume.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")


class DistillationTrainer(Trainer):
    """Knowledge distillation of causal LMs with optional counterfactual role reversal and DP-SGD.

    Args:
        model: the student. ``None`` builds one from the teacher (``args.student_layers`` /
            ``args.student_num_layers``) or loads ``args.student_model_name_or_path``.
        args: a :class:`~distill.config.DistillationConfig`.
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
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if isinstance(teacher_model, str):
            teacher_model = load_causal_lm(teacher_model, dtype=args.teacher_dtype,
                                           trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
        elif args.teacher_dtype != "auto":
            teacher_model = teacher_model.to(dtype=getattr(torch, args.teacher_dtype))
        if processing_class is None:
            processing_class = load_tokenizer(args.tokenizer_name_or_path or args.teacher_model_name_or_path,
                                              trust_remote_code=args.trust_remote_code)
        student_tokenizer = None
        if model is None and args.student_model_name_or_path:
            model = load_causal_lm(args.student_model_name_or_path, dtype="float32",
                                   trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
            student_tokenizer = maybe_load_tokenizer(args.student_model_name_or_path, args.trust_remote_code)
        elif model is None:
            model = build_student(teacher_model, num_layers=args.student_num_layers, layers=args.student_layers)
        check_compatible(teacher_model, model, processing_class, student_tokenizer)
        if data_collator is None:
            data_collator = DistillationCollator(pad_token_id=processing_class.pad_token_id)

        super().__init__(model=model, args=args, data_collator=data_collator,
                         processing_class=processing_class, **kwargs)
        # compute_loss returns a per-batch mean: let the Trainer divide it over accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

        teacher_model.eval()
        teacher_model.requires_grad_(False)
        # Like the student, the teacher goes through accelerate (device placement; no DDP wrapper for
        # a model that only runs inference).
        self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self.teacher.eval()
        # body + output layer when that is exact and accelerate did not wrap the teacher (FSDP, ...)
        unwrapped = self.accelerator.unwrap_model(self.teacher)
        self._teacher_split = split_output_layer(unwrapped) if unwrapped is self.teacher else None
        self._setup_counterfactual()
        self.teacher_cache = None
        if args.teacher_cache:  # stored (perturbed) targets replace the teacher forward; checked before training
            from .teacher_cache import TeacherCache

            self.teacher_cache = TeacherCache.for_trainer(self)
        # DP-SGD (distill.privacy): the engine takes over the train dataloader, the step and the accounting.
        self.privacy = None
        if args.dp_enabled:
            from .privacy import PrivacyEngine

            self.privacy = PrivacyEngine(self)
            self.add_callback(self.privacy.callback)

    # ------------------------------------------------------------------------------------------------
    # hooks for counterfactual role reversal (see distill.counterfactual)
    # ------------------------------------------------------------------------------------------------
    def _setup_counterfactual(self) -> None:
        """Build the token swapper (vocabulary permutation R) used by teacher-prediction perturbation."""
        self.token_swapper = None
        self.token_permutation = None
        if self.args.perturbation == "none":
            return
        from .counterfactual.lexicon import lexicon_from_config
        from .counterfactual.token_pairs import TokenSwapper

        if self.args.alpha_kd == 0:
            logger.warning("perturbation=%s changes the KD targets only, but alpha_kd is 0: it has no effect.",
                           self.args.perturbation)
        teacher = self.accelerator.unwrap_model(self.teacher)
        vocab_size = teacher.get_output_embeddings().weight.shape[0]
        swapper = TokenSwapper.from_tokenizer(self.processing_class, vocab_size, lexicon_from_config(self.args))
        if swapper.num_pairs == 0:
            raise ConfigError("perturbation needs gendered word pairs that are single tokens of the tokenizer, "
                              "and this tokenizer has none: set perturbation: none.")
        self.token_swapper = swapper.to(self.args.device)
        self.token_permutation = self.token_swapper.perm

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        extra = [c for c in ("labels", "cf_input_ids", "record_id", "cache_row") if c not in self._signature_columns]
        self._signature_columns = list(self._signature_columns) + extra

    # ------------------------------------------------------------------------------------------------
    # differential privacy: delegate to the privacy engine when dp_enabled
    # ------------------------------------------------------------------------------------------------
    def get_train_dataloader(self):
        if self.privacy is not None:
            return self.privacy.train_dataloader(self)
        return super().get_train_dataloader()

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None):
        if self.privacy is not None:
            return self.privacy.training_step(self, model, inputs, num_items_in_batch)
        return super().training_step(model, inputs, num_items_in_batch)

    def train(self, resume_from_checkpoint=None, **kwargs):
        if self.privacy is not None:
            self.privacy.load_resume_state(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ------------------------------------------------------------------------------------------------
    # teacher
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_targets(self, inputs: dict[str, torch.Tensor], need_hidden: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Temperature-softened teacher log-probabilities ``[B, T, V]`` (and last hidden states if asked)."""
        if self.teacher_cache is not None:  # the stored target: top-k + tail, perturbation already applied
            return self.teacher_cache.targets(inputs), None
        model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
        if self.token_swapper is not None and self.args.alpha_kd > 0:
            # counterfactual role reversal: x and the swapped rows of x̃ in one teacher forward
            logprobs, hidden, n_swapped = role_reversed_teacher_targets(
                self.teacher, model_inputs, self.token_swapper, temperature=self.args.temperature,
                mode=self.args.perturbation, lam=self.args.perturbation_lambda, need_hidden=need_hidden,
                split=self._teacher_split)
            if self.model.training:
                share = torch.tensor(n_swapped / model_inputs["input_ids"].size(0), device=logprobs.device)
                self._record_metrics({"crr_swapped_share": share})
            return logprobs, hidden
        if self._teacher_split is not None:  # the temperature divides the hidden states, not the logits
            body, head = self._teacher_split
            out = body(**model_inputs, output_hidden_states=need_hidden)
            logprobs = output_log_probs(head, out.last_hidden_state, self.args.temperature)
        else:
            out = self.teacher(**model_inputs, output_hidden_states=need_hidden)
            logprobs = teacher_log_probs(out.logits, self.args.temperature, inplace=True)
        hidden = out.hidden_states[-1] if need_hidden else None
        return logprobs, hidden

    # ------------------------------------------------------------------------------------------------
    # loss
    # ------------------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        args = self.args
        need_hidden = args.alpha_cos > 0
        model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
        outputs = model(**model_inputs, output_hidden_states=need_hidden)
        teacher_logprobs, teacher_hidden = (None, None)
        if args.alpha_kd > 0 or need_hidden:
            teacher_logprobs, teacher_hidden = self.teacher_targets(inputs, need_hidden=need_hidden)
        loss, parts = distillation_loss(
            outputs.logits, teacher_logprobs, inputs["labels"], inputs.get("attention_mask"),
            temperature=args.temperature, alpha_kd=args.alpha_kd, alpha_lm=args.alpha_lm, alpha_cos=args.alpha_cos,
            student_hidden=outputs.hidden_states[-1] if need_hidden else None, teacher_hidden=teacher_hidden,
            **args.kd_kwargs(),
        )
        self._record_metrics(parts)
        return (loss, outputs) if return_outputs else loss

    def _record_metrics(self, parts: dict[str, torch.Tensor]) -> None:
        mode = "train" if self.model.training else "eval"
        for key, value in parts.items():
            if self.accelerator.num_processes > 1:
                value = self.accelerator.gather_for_metrics(value.reshape(1)).float().mean()
            self._metrics[mode][key].append(float(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        if mode == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        elif getattr(self, "privacy", None) is not None:
            metrics.update(self.privacy.log_metrics())
        logs = {**logs, **metrics}
        super().log(logs, start_time)
        self._metrics[mode].clear()

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

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
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

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Save the student to ``output_dir`` and push it with its model card and reports (see distill.hub)."""
        from .hub.push import publish_run
        from .train import save_student

        save_student(self, self.args)
        if not self.is_world_process_zero():
            return None
        return publish_run(self.args, push=True, commit_message=commit_message, token=token, revision=revision,
                           private=private)
