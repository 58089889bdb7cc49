"""DP training through DistillationTrainer: noise, accounting across resume, budget stop, config errors."""

import json
import math

import pytest
import torch
from transformers import TrainerCallback

from distill.errors import ConfigError
from distill.privacy.accounting import compute_epsilon
from distill.privacy.noise import privatize
from distill.distillation.train import build_trainer, run_training

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


def test_dp_training_and_kill_and_resume_give_the_same_epsilon(tiny_args, tmp_path):
    full = build_trainer(tiny_args(**DP, output_dir=str(tmp_path / "full"), max_steps=6))
    student = full.model
    assert not student.transformer.wte.weight.requires_grad and not student.transformer.wpe.weight.requires_grad
    wte = student.transformer.wte.weight.detach().clone()
    block = student.transformer.h[0].attn.c_attn.weight.detach().clone()
    full.train()
    assert torch.equal(student.transformer.wte.weight, wte)  # frozen public embeddings (and tied lm_head)
    assert not torch.equal(student.transformer.h[0].attn.c_attn.weight, block)
    logs = [h for h in full.state.log_history if "dp/epsilon" in h and "loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3, 4, 5, 6]
    eps = [h["dp/epsilon"] for h in logs]
    assert eps == sorted(eps) and eps[0] > 0
    p = full.privacy.params_resolved
    assert eps[-1] == pytest.approx(compute_epsilon(1.0, p.sample_rate, 6, p.delta), rel=1e-9)
    assert p.expected_batch_size == 4 and p.delta == pytest.approx(min(1e-5, 1 / (p.num_records * math.log(p.num_records))))
    full_summary = json.loads((tmp_path / "full" / "privacy.json").read_text())
    assert full_summary["epsilon"] == pytest.approx(eps[-1]) and full_summary["steps"] == 6

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            control.should_training_stop = True

    part = tiny_args(**DP, output_dir=str(tmp_path / "part"), max_steps=6, save_strategy="steps", save_steps=3)
    first = build_trainer(part, callbacks=[Kill()])
    first.train()
    saved = json.loads((tmp_path / "part" / "checkpoint-3" / "privacy_state.json").read_text())
    assert saved["history"][0][2] == 3
    resumed = run_training(tiny_args(**DP, output_dir=str(tmp_path / "part"), max_steps=6,
                                     resume_from_checkpoint="latest"))
    res_summary = json.loads((tmp_path / "part" / "privacy.json").read_text())
    assert res_summary["steps"] == 6
    assert res_summary["epsilon"] == pytest.approx(full_summary["epsilon"], rel=1e-12)
    curve = [h["dp/epsilon"] for h in resumed.state.log_history if "dp/epsilon" in h and "loss" in h]
    assert curve == pytest.approx(eps, rel=1e-12)  # the same ε curve, continued from the checkpoint


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


def test_record_sampler_keeps_records_together_and_shards_processes():
    from distill.privacy.sampling import RecordBatchSampler

    records = [[2 * i, 2 * i + 1] if i % 3 == 0 else [2 * i] for i in range(300)]  # every third has a counterfactual
    row_to_record = {row: r for r, rows in enumerate(records) for row in rows}
    kw = dict(sample_rate=0.1, steps_per_epoch=40, micro_batches=2, num_processes=2, seed=3)
    ranks = [list(RecordBatchSampler(records, process_index=r, **kw)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 80  # 40 logical steps x 2 micro-batches per process
    sizes = []
    for step in range(40):
        micro = [mb for r in (0, 1) for mb in ranks[r][2 * step:2 * step + 2]]
        drawn = [row_to_record[row] for mb in micro for row in mb]
        for mb in micro:  # all rows of a record in the same micro-batch
            recs = {row_to_record[row] for row in mb}
            assert sorted(mb) == sorted(row for r in recs for row in records[r])
        assert len(set(drawn)) == len({row_to_record[row] for mb in micro for row in mb})
        sizes.append(len(set(drawn)))
    assert 20 <= sum(sizes) / len(sizes) <= 40  # Poisson draws of expected size q·R = 30 records


def test_prepare_datasets_adds_record_ids_and_canaries(tiny_args, gpt2_tok):
    from distill.distillation.data import prepare_datasets
    from distill.privacy.canary import make_canary

    args = tiny_args(packing=False, canary_repeats=5, canary_seed=11, validation_split_percentage=0,
                     max_train_samples=50)
    train, _ = prepare_datasets(args, gpt2_tok)
    assert sorted(train["record_id"]) == list(range(55))
    canary_ids = gpt2_tok(make_canary(11), add_special_tokens=False)["input_ids"]
    assert sum(1 for ids in train["input_ids"] if ids == canary_ids) == 5
