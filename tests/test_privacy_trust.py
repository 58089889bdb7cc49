"""Privacy users can trust: secret DP randomness, the δ rule, budget validation, strict privacy.json, disclosure."""

import json
import math
import time

import pytest
import torch

from distill.errors import ConfigError
from distill.privacy.accounting import (accounted_sample_rate, calibrate_noise, compute_epsilon, default_delta,
                                        describe_noise, resolve_delta)
from distill.privacy.disclosure import strict_json
from distill.privacy.randomness import DPRandomness
from distill.privacy.sampling import RecordBatchSampler

DP = dict(dp_enabled=True, packing=False, dp_noise_multiplier=1.0, dp_max_grad_norm=1.0, validation_split_percentage=0)


def _noise(randomness: DPRandomness) -> torch.Tensor:
    return torch.normal(0.0, 1.0, size=(64,), generator=randomness.noise_generator("cpu"))


def _sample(randomness: DPRandomness) -> list[list[int]]:
    sampler = RecordBatchSampler([[i] for i in range(200)], sample_rate=0.1, steps_per_epoch=5, micro_batches=1,
                                 seed=randomness.sampling_seed())
    return [list(b) for b in sampler.logical_batches()]


def test_noise_and_sample_are_secret_by_default_and_reproducible_on_request():
    torch.manual_seed(0)
    a, b = DPRandomness(seed=42), DPRandomness(seed=42)
    assert not torch.equal(_noise(a), _noise(b))  # same public seed, different noise
    assert _sample(a) != _sample(b)
    torch.manual_seed(0)
    assert not torch.equal(_noise(DPRandomness(seed=42)), torch.normal(0.0, 1.0, size=(64,)))  # not the global RNG
    r1, r2 = DPRandomness(reproducible=True, seed=42), DPRandomness(reproducible=True, seed=42)
    assert torch.equal(_noise(r1), _noise(r2)) and _sample(r1) == _sample(r2)
    assert not torch.equal(_noise(DPRandomness(reproducible=True, seed=43)), _noise(DPRandomness(True, 42)))
    assert "warning" in r1.describe() and "warning" not in a.describe()


def _trained_block(tiny_args, out, **kw):
    from distill.distillation.train import run_training

    trainer = run_training(tiny_args(**DP, output_dir=str(out), max_steps=2, seed=42, **kw))
    return trainer.model.transformer.h[0].mlp.c_fc.weight.detach().clone()


def test_two_dp_runs_with_the_same_seed_differ_unless_reproducible(tiny_args, tmp_path):
    """End to end: same seed, same data; DP noise + sample differ by default, coincide with dp_reproducible."""
    a, b = _trained_block(tiny_args, tmp_path / "a"), _trained_block(tiny_args, tmp_path / "b")
    assert (a - b).abs().max() > 1e-4
    c = _trained_block(tiny_args, tmp_path / "c", dp_reproducible=True)
    d = _trained_block(tiny_args, tmp_path / "d", dp_reproducible=True)
    assert torch.equal(c, d)
    summary = json.loads((tmp_path / "c" / "privacy.json").read_text())
    assert summary["randomness"]["reproducible"] and "does NOT hold" in summary["warnings"][0]
    card = (tmp_path / "c" / "README.md").read_text()
    assert "does NOT hold" in card and "Not covered by ε" in card
    secret = json.loads((tmp_path / "a" / "privacy.json").read_text())
    assert secret["randomness"]["reproducible"] is False and secret["warnings"] == []
    assert secret["frozen_parameters"]["provably_public"] and "public teacher" in secret["frozen_parameters"]["why_public"]
    assert secret["sampling"]["method"] == "poisson" and secret["privacy_unit"].startswith("one training record")
    assert any("validation" in x for x in secret["outside_epsilon"])


def test_default_delta_is_well_below_one_over_n():
    for n in (2, 10, 100, 1000, 10**5, 10**6, 10**9):
        d = default_delta(n)
        assert d == pytest.approx(min(1e-5, 1 / (n * math.log(n))))
        assert d < 1 / n and d * n <= max(1 / math.log(n), 1e-5 * n)
    assert resolve_delta(None, 5000) == default_delta(5000)
    assert resolve_delta(1e-6, 5000) == 1e-6
    with pytest.raises(ConfigError, match="not below 1/N"):
        resolve_delta(1 / 5000, 5000)
    with pytest.raises(ConfigError, match="dp_allow_large_delta"):
        resolve_delta(0.01, 5000)
    assert resolve_delta(0.01, 5000, allow_large=True) == 0.01


def test_large_delta_is_refused_before_training(tiny_args, tmp_path):
    from distill.distillation.train import build_trainer

    trainer = build_trainer(tiny_args(**DP, dp_delta=0.05, output_dir=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="dp_delta=0.05 is not below 1/N"):
        trainer.get_train_dataloader()


@pytest.mark.parametrize("key,value", [("dp_target_epsilon", "nan"), ("dp_target_epsilon", "inf"),
                                       ("dp_target_epsilon", "-inf"), ("dp_noise_multiplier", "nan"),
                                       ("dp_noise_multiplier", "inf"), ("dp_delta", "nan"), ("dp_max_grad_norm", "nan")])
def test_non_finite_budgets_are_config_errors(tiny_args, key, value):
    kw = dict(DP)
    kw[key] = float(value)
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        tiny_args(**kw)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_huge_budgets_resolve_in_seconds_and_say_what_noise_they_mean(accountant):
    start = time.time()
    sigma = calibrate_noise(1e15, 1e-5, 0.02, 400, accountant)
    assert time.time() - start < 20  # opacus' own search never returns for this target
    assert compute_epsilon(sigma, 0.02, 400, 1e-5, accountant) <= 1e15
    note = describe_noise(sigma, 1.0, 8, 1e15)
    assert note and "no meaningful privacy" in note and f"sigma={sigma:.3g}" in note
    assert describe_noise(1.0, 1.0, 8, 3.0) is None


def test_calibration_is_tight():
    for target in (1.0, 8.0, 1e3):
        sigma = calibrate_noise(target, 1e-5, 0.02, 400)
        assert compute_epsilon(sigma, 0.02, 400, 1e-5) <= target < compute_epsilon(sigma * 0.99, 0.02, 400, 1e-5)


def test_privacy_json_is_strict_json_with_zero_noise(tiny_args, tmp_path):
    from distill.distillation.train import run_training

    run_training(tiny_args(**{**DP, "dp_noise_multiplier": 0.0}, output_dir=str(tmp_path / "z"), max_steps=2))
    text = (tmp_path / "z" / "privacy.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert summary["epsilon"] is None and summary["epsilon_is_infinite"] is True
    assert any("no meaningful privacy" in w for w in summary["warnings"])
    assert strict_json({"a": [float("nan")], "b": float("-inf")}) == {"a": [None], "b": None, "b_is_infinite": True}


def test_shuffled_batches_claim_no_amplification(tiny_args, tmp_path):
    from distill.distillation.train import run_training

    assert accounted_sample_rate(0.1, True) == 0.1 and accounted_sample_rate(0.1, False) == 1.0
    trainer = run_training(tiny_args(**DP, dp_poisson_sampling=False, output_dir=str(tmp_path / "s"), max_steps=2))
    p = trainer.privacy.params_resolved
    summary = json.loads((tmp_path / "s" / "privacy.json").read_text())
    assert summary["epsilon"] == pytest.approx(compute_epsilon(1.0, 1.0, 2, p.delta))
    assert summary["epsilon"] > compute_epsilon(1.0, p.sample_rate, 2, p.delta)
    assert summary["sampling"]["accounted_sample_rate"] == 1.0 and "no amplification" in summary["sampling"]["assumption"]


def test_student_checkpoint_not_from_the_teacher_is_disclosed(tiny_args, tmp_path, tiny_teacher_dir):
    from distill.distillation.train import run_training

    first = tmp_path / "first"
    run_training(tiny_args(output_dir=str(first), max_steps=1, validation_split_percentage=0))
    run_training(tiny_args(**DP, output_dir=str(tmp_path / "second"), max_steps=1, student_model_name_or_path=str(first)))
    summary = json.loads((tmp_path / "second" / "privacy.json").read_text())
    assert summary["frozen_parameters"]["provably_public"] is False
    assert str(first) in summary["frozen_parameters"]["why_public"]
    assert any("not from the public teacher" in w for w in summary["warnings"])
