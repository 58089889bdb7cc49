"""The local step of a device: a few steps of :class:`~distill.DistillationTrainer` from the global weights.

:class:`LocalDistillation` is the ``local_train`` callable the ClientApp of :mod:`distill.federated.app` calls:
it trains a copy of the initial student, loaded with the received global weights, on the device's records
(KD, CDA + teacher perturbation, local DP-SGD as the config says) through
:func:`distill.distillation.train.build_trainer`, and returns the trainable weights and ``train_loss`` (and
``local_epsilon`` under DP-SGD).

:func:`process_models` keeps, per process, the public teacher, the initial student and the tokenizer that
:func:`distill.distillation.models.build_models` builds from the config: a Flower simulation worker trains many
devices one after the other, and the server builds its initial global student from the same models, so a
process loads the teacher once.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

from ..outputs import PRIVACY_FILENAME

#: Per-process cache: :func:`distill.distillation.models.model_key` -> (teacher, initial student, tokenizer).
_MODELS: dict[tuple, tuple] = {}


def process_models(args) -> tuple:
    """``(teacher, initial student, tokenizer)`` of ``args``, built once per process; callers must not modify
    them (train or evaluate a copy of the student)."""
    from ..distillation.models import build_models, model_key

    key = model_key(args)
    if key not in _MODELS:
        _MODELS[key] = build_models(args)
    return _MODELS[key]


class LocalDistillation:
    """The local step of a device: ``local_steps`` steps of :class:`~distill.DistillationTrainer` from the
    received global weights on the device's records (KD, CDA + teacher perturbation, local DP-SGD as the config
    says); returns the trainable weights and ``train_loss`` (and ``local_epsilon`` under DP-SGD)."""

    def __init__(self, args, local_steps: int, trainable: list[str]):
        self.config = args.distill_dict(only_non_default=True)
        self.local_steps, self.trainable = local_steps, list(trainable)

    def __call__(self, state, texts, server_round, device):
        from ..distillation.config import DistillationConfig
        from ..distillation.train import build_trainer

        with tempfile.TemporaryDirectory(prefix="fl-device-") as tmp:
            args = DistillationConfig(**{
                **self.config, "output_dir": tmp, "overwrite_output_dir": True, "max_steps": self.local_steps,
                "seed": int(self.config.get("seed", 42)) + 1000 * server_round + device,
                "eval_strategy": "no", "eval_on_start": False, "save_strategy": "no", "load_best_model_at_end": False,
                "validation_split_percentage": 0, "validation_file": None, "fairness_enabled": False,
                "push_to_hub": False, "report_to": "none", "disable_tqdm": True, "logging_steps": self.local_steps,
                "max_train_samples": None, "dataset_name": None, "train_file": None})
            teacher, pristine, _ = process_models(args)
            student = copy.deepcopy(pristine)  # DP engines attach hooks: every round starts from a clean module
            missing = set(self.trainable) - set(state)
            if missing:
                raise KeyError(f"the server sent no weights for {sorted(missing)[:3]}")
            student.load_state_dict(state, strict=False)
            trainer = build_trainer(args, texts=texts, model=student, teacher_model=teacher)
            result = trainer.train()
            params = dict(student.named_parameters())
            out = {n: params[n].detach().clone().contiguous() for n in self.trainable}
            metrics = {"train_loss": float(result.training_loss)}
            privacy = os.path.join(tmp, PRIVACY_FILENAME)
            if os.path.isfile(privacy):
                with open(privacy) as fh:
                    metrics["local_epsilon"] = float(json.load(fh)["epsilon"])
        return out, metrics


def trainable_names(student, local_dp: bool) -> list[str]:
    """Names of the student parameters a device trains and sends: all of them, except the embeddings (and the
    tied output layer) that local DP-SGD freezes (:func:`distill.privacy.engine.freeze_embeddings`)."""
    probe = copy.deepcopy(student)
    if local_dp:
        from ..privacy.engine import freeze_embeddings

        freeze_embeddings(probe)
    return [n for n, p in probe.named_parameters() if p.requires_grad]


def make_local_step(args, fl) -> LocalDistillation:
    """The devices' local step for a run: :class:`LocalDistillation` over the trainable parameters of the
    initial student (the models of :func:`process_models`: this process loads the teacher once)."""
    _, student, _ = process_models(args)
    return LocalDistillation(args, fl.local_steps, trainable_names(student, args.dp_enabled))
