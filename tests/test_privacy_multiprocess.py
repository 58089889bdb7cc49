"""2 processes (accelerate launch, gloo on CPU): DP-SGD under DDP — one noise draw per logical step, no deadlock
when a process draws no record, the same update and ε as one process."""

import json
import math

import pytest
import torch

from mp_helpers.launch import accelerate_launch

COMMON = ["-m", "distill", "train", "--config", "configs/tiny-dp.yaml", "--eval_on_start", "false",
          "--save_strategy", "no", "--block_size", "32", "--logging_steps", "1", "--disable_tqdm", "true"]


@pytest.mark.slow
def test_two_processes_add_noise_once_per_logical_step(tmp_path, tiny_teacher_dir):
    """With σ = 50 the noisy mean gradient is almost pure noise: its norm is σ·C·√n / B for ONE draw per step
    (n trainable weights, B expected records per logical step); a draw per process would give √2 times that."""
    out = tmp_path / "ddp-dp"
    sigma, clip, per_device, accum, world = 50.0, 1.0, 2, 2, 2
    res = accelerate_launch([*COMMON, "--teacher_model_name_or_path", tiny_teacher_dir, "--output_dir", str(out),
                             "--max_steps", "3", "--eval_strategy", "no", "--per_device_train_batch_size",
                             str(per_device), "--gradient_accumulation_steps", str(accum), "--max_train_samples", "400",
                             "--dp_noise_multiplier", str(sigma), "--dp_max_grad_norm", str(clip),
                             "--dp_target_epsilon", "100"], num_processes=world)
    assert res.returncode == 0, res.stderr[-4000:]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out))
    n = sum(p.numel() for name, p in model.named_parameters() if ".wte." not in name and ".wpe." not in name)
    batch = per_device * accum * world
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "grad_norm" in h]
    assert [h["step"] for h in logs] == [1, 2, 3] and all("dp/epsilon" in h for h in logs)
    for h in logs:
        ratio = h["grad_norm"] * batch / (sigma * clip * math.sqrt(n))
        assert ratio == pytest.approx(1.0, abs=0.05), (ratio, "noise drawn once per logical step?")
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["steps"] == 3 and privacy["expected_batch_size"] == batch
    assert privacy["epsilon"] == pytest.approx(logs[-1]["dp/epsilon"])


@pytest.mark.slow
def test_two_processes_one_record_each_run_to_the_end_with_fairness_eval(tmp_path, tiny_teacher_dir):
    """Per-device batch 1, no accumulation: Poisson draws fewer than 2 records at ~41 % of the steps (k ~ Poisson(2)),
    so over 24 steps one process has an empty micro-batch many times (all 24 non-empty: p ≈ 0.59²⁴ ≈ 3e-6). The
    run must finish (every process in every collective), log the loss components each step, run the split
    fairness evaluation at steps 12 and 24 and write the final report once."""
    out = tmp_path / "ddp-dp-1"
    steps = 24
    res = accelerate_launch([*COMMON, "--teacher_model_name_or_path", tiny_teacher_dir, "--output_dir", str(out),
                             "--max_steps", str(steps), "--per_device_train_batch_size", "1",
                             "--gradient_accumulation_steps", "1", "--max_train_samples", "120",
                             "--dp_noise_multiplier", "1.0", "--dp_target_epsilon", "1000", "--eval_strategy", "steps",
                             "--eval_steps", "12", "--per_device_eval_batch_size", "8", "--validation_split_percentage",
                             "10", "--fairness_enabled", "true", "--fairness_max_prompts_per_group", "1"],
                            timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    train_logs = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in train_logs] == list(range(1, steps + 1))
    assert all("dp/epsilon" in h for h in train_logs)
    # the loss components are absent only at a step where Poisson drew no record at all (p = e⁻² ≈ 0.14)
    with_parts = [h for h in train_logs if "loss_kd" in h]
    assert len(with_parts) >= steps // 2 and all("loss_lm" in h for h in with_parts)
    fairness_logs = [h for h in state["log_history"] if "fairness/cooccurrence_bias_mean_abs" in h]
    assert sorted({h["step"] for h in fairness_logs}) == [12, 24]  # (run_training evaluates once more at the end)
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["steps"] == steps and privacy["expected_batch_size"] == 2
    report = json.loads((out / "fairness.json").read_text())
    assert report["cooccurrence_bias_mean_abs"] == pytest.approx(fairness_logs[-1]["fairness/cooccurrence_bias_mean_abs"])


@pytest.mark.slow
def test_two_processes_give_the_one_process_clipped_sum_and_epsilon(tmp_path, tiny_teacher_dir):
    """σ = 0, dropout off, the same Poisson draws (same seed and rate: 1 process × 2 accumulation steps of 2 rows
    vs 2 processes × 1 step of 2): the gradient the optimizer sees — Σ of per-record clipped gradients (records of
    several rows: two-sided CDA) over all processes / expected batch — is the same at every step; with σ = 1 the
    ε is the same."""
    from mp_helpers.dp_step import main

    one = tmp_path / "one"
    main(tiny_teacher_dir, str(one), 2, 2)
    two = tmp_path / "two"
    res = accelerate_launch(["tests/mp_helpers/dp_step.py", tiny_teacher_dir, str(two), "2", "1"], timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    a, b = torch.load(one / "grads.pt"), torch.load(two / "grads.pt")
    assert (a["world"], b["world"]) == (1, 2)
    assert a["sample_rate"] == b["sample_rate"] and a["num_records"] == b["num_records"]
    assert len(a["grads"]) == len(b["grads"]) == 3
    for step_a, step_b in zip(a["grads"], b["grads"]):
        assert sum(float(g.norm()) for g in step_a) > 0
        for ga, gb in zip(step_a, step_b):
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
    assert math.isfinite(a["epsilon"]) and a["epsilon"] > 0
    assert b["epsilon"] == a["epsilon"]
