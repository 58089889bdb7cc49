"""2 processes (accelerate launch, gloo on CPU): one noise draw per logical step for the global batch."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_two_processes_add_noise_once_per_logical_step(tmp_path, tiny_teacher_dir):
    """With σ = 50 the noisy mean gradient is almost pure noise: its norm is σ·C·√n / B for ONE draw per step
    (n trainable weights, B expected records per logical step); a draw per process would give √2 times that."""
    out = tmp_path / "ddp-dp"
    sigma, clip, per_device, accum, world = 50.0, 1.0, 2, 2, 2
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(world),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distill", "train",
           "--config", "configs/tiny-dp.yaml", "--teacher_model_name_or_path", tiny_teacher_dir,
           "--output_dir", str(out), "--max_steps", "3", "--eval_strategy", "no", "--eval_on_start", "false",
           "--save_strategy", "no", "--per_device_train_batch_size", str(per_device),
           "--gradient_accumulation_steps", str(accum), "--block_size", "32", "--max_train_samples", "400",
           "--dp_noise_multiplier", str(sigma), "--dp_max_grad_norm", str(clip), "--dp_target_epsilon", "100",
           "--logging_steps", "1", "--disable_tqdm", "true"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ))
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
