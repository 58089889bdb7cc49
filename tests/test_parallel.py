"""Start-up checks of the accelerate engine (distill.distillation.parallel) and the import direction of distill.privacy."""

import json
from types import SimpleNamespace

import pytest

from distill.errors import ConfigError
from distill.distillation.parallel import check_parallel_engine, parallel_engine

ACCELERATE_ENV = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                  "ACCELERATE_DEEPSPEED_CONFIG_FILE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ACCELERATE_ENV:
        monkeypatch.delenv(name, raising=False)


def _args(dp=False, fsdp=False, deepspeed=None):
    return SimpleNamespace(dp_enabled=dp, fsdp=fsdp, deepspeed=deepspeed)


@pytest.mark.parametrize("dp", [False, True])
def test_ddp_and_one_process_are_accepted(dp):
    assert parallel_engine(_args(dp)) == ("ddp", None)
    check_parallel_engine(_args(dp))


@pytest.mark.parametrize("dp,match", [(True, "dp_enabled does not run under FSDP"),
                                      (False, "teacher would stay unwrapped")])
def test_fsdp_is_refused_naming_ddp(dp, match, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    with pytest.raises(ConfigError, match=match) as err:
        check_parallel_engine(_args(dp))
    assert "--multi_gpu" in str(err.value) and "\n" not in str(err.value)


def test_deepspeed_zero3_refused_zero2_allowed_without_dp(tmp_path, monkeypatch):
    z3 = {"zero_optimization": {"stage": 3}}
    with pytest.raises(ConfigError, match="ZeRO-3 partitions the teacher"):
        check_parallel_engine(_args(deepspeed=z3))
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert parallel_engine(_args(deepspeed=str(path))) == ("deepspeed", 2)
    check_parallel_engine(_args(deepspeed=str(path)))
    with pytest.raises(ConfigError, match=r"dp_enabled does not run under DeepSpeed \(ZeRO stage 2\)"):
        check_parallel_engine(_args(dp=True, deepspeed=str(path)))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ConfigError, match="ZeRO-3"):
        check_parallel_engine(_args())


def test_trainer_refuses_fsdp_before_loading_data(tiny_args):
    from distill.distillation.train import build_trainer

    args = tiny_args(dp_enabled=True, packing=False, dp_noise_multiplier=1.0, validation_split_percentage=0,
                     fsdp=True)
    with pytest.raises(ConfigError, match="FSDP"):
        build_trainer(args, texts=["never read"])
