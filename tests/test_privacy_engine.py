"""DP training through DistillationTrainer: noise, accounting across resume, budget stop, config errors."""

import json
import os

import pytest
import torch
from transformers import TrainerCallback

from distill.errors import ConfigError
from distill.privacy.accounting import compute_epsilon
from distill.privacy.noise import privatize
from distill.train import build_trainer, run_training

DP = dict(dp_enabled=True, packing=False, dp_noise_multiplier=1.0, dp_max_grad_norm=1.0, validation_split_percentage=0)


def test_noise_has_the_calibrated_std():
    """p.grad = (clipped sum + N(0, σ²C²)) / expected batch: check the std of many coordinates (margin 3%)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(200_000))
    signal = torch.full((200_000,), 3.0)
    privatize([p], {id(p): signal.clone()}, noise_std=2.0 * 0.5, expected_batch_size=8)
    noise = p.grad * 8 - signal
    assert noise.mean().abs() < 0.01
    assert noise.std().item() == pytest.approx(1.0, rel=0.03)


def test_dp_step_trains_only_non_embedding_weights_and_logs_epsilon(tiny_args):
    trainer = build_trainer(tiny_args(**DP, max_steps=3))
    student = trainer.model
    assert not student.transformer.wte.weight.requires_grad and not student.transformer.wpe.weight.requires_grad
    wte = student.transformer.wte.weight.detach().clone()
    block = student.transformer.h[0].attn.c_attn.weight.detach().clone()
    trainer.train()
    assert torch.equal(student.transformer.wte.weight, wte)  # frozen public embeddings (and tied lm_head)
    assert not torch.equal(student.transformer.h[0].attn.c_attn.weight, block)
    logs = [h for h in trainer.state.log_history if "dp/epsilon" in h and "loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3]
    eps = [h["dp/epsilon"] for h in logs]
    assert eps == sorted(eps) and eps[0] > 0
    p = trainer.privacy.params_resolved
    assert eps[-1] == pytest.approx(compute_epsilon(1.0, p.sample_rate, 3, p.delta), rel=1e-9)
    assert p.expected_batch_size == 4 and p.delta == pytest.approx(1 / p.num_records)


def test_kill_and_resume_gives_the_same_epsilon(tiny_args, tmp_path):
    full = run_training(tiny_args(**DP, output_dir=str(tmp_path / "full"), max_steps=6))
    full_eps = json.loads((tmp_path / "full" / "privacy.json").read_text())

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            control.should_training_stop = True

    part = tiny_args(**DP, output_dir=str(tmp_path / "part"), max_steps=6, save_strategy="steps", save_steps=3)
    first = build_trainer(part, callbacks=[Kill()])
    first.train()
    ckpt = tmp_path / "part" / "checkpoint-3"
    saved = json.loads((ckpt / "privacy_state.json").read_text())
    assert saved["history"][0][2] == 3
    resumed = run_training(tiny_args(**DP, output_dir=str(tmp_path / "part"), max_steps=6,
                                     resume_from_checkpoint="latest"))
    res_eps = json.loads((tmp_path / "part" / "privacy.json").read_text())
    assert res_eps["steps"] == full_eps["steps"] == 6
    assert res_eps["epsilon"] == pytest.approx(full_eps["epsilon"], rel=1e-12)
    curve = lambda t: [h["dp/epsilon"] for h in t.state.log_history if "dp/epsilon" in h and "loss" in h]  # noqa: E731
    assert curve(resumed) == pytest.approx(curve(full), rel=1e-12)  # the same ε curve, continued


def test_training_stops_at_the_budget_with_a_saved_model(tiny_args, tmp_path):
    out = tmp_path / "budget"
    probe = build_trainer(tiny_args(**DP, output_dir=str(out)))
    probe.get_train_dataloader()
    q, delta = probe.privacy.params_resolved.sample_rate, probe.privacy.params_resolved.delta
    target = compute_epsilon(1.0, q, 3, delta) * 1.0001  # room for 3 steps, not 4
    trainer = run_training(tiny_args(**DP, dp_target_epsilon=target, output_dir=str(out), max_steps=8))
    assert trainer.state.global_step == 3
    summary = json.loads((out / "privacy.json").read_text())
    assert summary["epsilon"] <= target and "stopped at step 3" in summary["stopped_early"]
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize("kw,match", [
    (dict(packing=True), "packing: false"),
    (dict(dp_noise_multiplier=None), "dp_target_epsilon"),
    (dict(fp16=True), "fp16"),
])
def test_dp_config_errors(tiny_args, kw, match):
    with pytest.raises(ConfigError, match=match):
        tiny_args(**{**DP, **kw})


def test_dp_errors_before_training(tiny_args):
    with pytest.raises(ConfigError, match="larger than the"):
        build_trainer(tiny_args(**DP, per_device_train_batch_size=4, gradient_accumulation_steps=1000)).train()
