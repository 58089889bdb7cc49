"""Run by tests/test_privacy_multiprocess.py, in 1 process or under `accelerate launch` (2 processes).

Trains a tiny DP student with σ = 0 (dropout off) and saves, on the main process, the noise-free gradient
``(Σ clipped per-record gradients) / expected batch`` of every trainable parameter at every step; then a
second short run with σ = 1 and saves its ε. Poisson draws are fixed by `fixed_poisson_draws`. Usage:
``dp_step.py TEACHER_DIR OUT_DIR PER_DEVICE ACCUM``.
"""

import json
import os
import sys

import torch
from torch import nn
from transformers import TrainerCallback

from distill.distillation.config import DistillationConfig
from distill.privacy.sampling import RecordBatchSampler
from distill.distillation.train import build_trainer
from distill.runtime import end_process_group


def fixed_poisson_draws(self):
    """The same Poisson draws (rate q) in every run and process, whatever generator the sampler uses."""
    g = torch.Generator().manual_seed(1234 + self.epoch)
    for _ in range(self.steps_per_epoch):
        yield (torch.rand(len(self.records), generator=g) < self.sample_rate).nonzero().flatten().tolist()


class GradCapture(TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.steps = trainer, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append([p.grad.detach().clone() for p in self.trainer.privacy.params])


def config(teacher, out, per_device, accum, **kw):
    base = dict(output_dir=out, teacher_model_name_or_path=teacher, student_num_layers=2,
                dataset_name="builtin:tiny", block_size=32, max_train_samples=200, packing=False,
                per_device_train_batch_size=per_device, gradient_accumulation_steps=accum, max_steps=3,
                learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0,
                data_seed=0, disable_tqdm=True, validation_split_percentage=0, dp_enabled=True,
                dp_max_grad_norm=0.5, cda="two_sided")  # two rows for gendered records: multi-row records
    base.update(kw)
    return DistillationConfig(**base)


def main(teacher, out, per_device, accum):
    original = RecordBatchSampler.logical_batches
    RecordBatchSampler.logical_batches = fixed_poisson_draws
    try:
        run(teacher, out, int(per_device), int(accum))
    finally:
        RecordBatchSampler.logical_batches = original
        end_process_group()  # as every `distill` command does: gloo may abort at interpreter shutdown


def run(teacher, out, per_device, accum):
    trainer = build_trainer(config(teacher, os.path.join(out, "sigma0"), per_device, accum, dp_noise_multiplier=0.0))
    for m in trainer.model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    capture = GradCapture(trainer)
    trainer.add_callback(capture)
    trainer.train()
    noisy = build_trainer(config(teacher, os.path.join(out, "sigma1"), per_device, accum, dp_noise_multiplier=1.0))
    noisy.train()
    if trainer.is_world_process_zero():
        torch.save({"grads": capture.steps, "num_records": trainer.privacy.params_resolved.num_records,
                    "sample_rate": trainer.privacy.params_resolved.sample_rate,
                    "epsilon": noisy.privacy.epsilon(),
                    "world": trainer.accelerator.num_processes}, os.path.join(out, "grads.pt"))
        with open(os.path.join(out, "done.json"), "w") as fh:
            json.dump({"ok": True}, fh)


if __name__ == "__main__":
    main(*sys.argv[1:5])
