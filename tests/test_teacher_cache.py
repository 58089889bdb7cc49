"""Teacher cache: exact at k = V against the online targets (KD, CRR, DP), one-line mismatch errors, resume."""

import copy
import dataclasses
import glob
import os
from types import SimpleNamespace

from unittest import mock

import pytest
import torch

from distill.errors import ConfigError
from distill.distillation.losses import SparseTarget
from distill.distillation.teacher_cache import TeacherCache, build_teacher_cache, shard_path
from distill.outputs import CACHE_ROW
from distill.distillation.train import build_trainer, run_training
from distill.distillation.trainer import DistillationTrainer

V = 50257  # the tiny teacher has GPT-2's vocabulary


#: a handful of short rows: a k = V cache of them stays a few MB
SMALL = dict(max_train_samples=6, block_size=16, per_device_train_batch_size=2, per_device_eval_batch_size=2,
             alpha_cos=0.0, validation_split_percentage=0, eval_strategy="no", temperature=2.0)
CRR = dict(perturbation="mean", cda="two_sided")


def _args(tiny_args, **kw):
    return tiny_args(**{**SMALL, **kw})


def _online(tmp_path_factory, teacher_dir, **kw):
    from distill.distillation.config import DistillationConfig

    args = DistillationConfig(output_dir=str(tmp_path_factory.mktemp("online")), teacher_model_name_or_path=teacher_dir,
                              student_num_layers=2, dataset_name="builtin:tiny", learning_rate=1e-3, report_to="none",
                              save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, **SMALL, **kw)
    return build_trainer(args)


@pytest.fixture(scope="module")
def online_kd(tmp_path_factory, tiny_teacher_dir):
    """An online KD trainer on the small data (shared: building one prepares data and a student)."""
    return _online(tmp_path_factory, tiny_teacher_dir)


@pytest.fixture(scope="module")
def online_crr(tmp_path_factory, tiny_teacher_dir):
    return _online(tmp_path_factory, tiny_teacher_dir, **CRR)


def _twin(online, **changes):
    """A trainer for the same data, teacher and student weights as ``online``, with config ``changes``."""
    args = dataclasses.replace(online.args, **changes)
    return DistillationTrainer(model=copy.deepcopy(online.model), args=args, teacher_model=online.teacher,
                               processing_class=online.processing_class, train_dataset=online.train_dataset)


def _first_batch(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    return trainer._prepare_inputs(batch)


def _loss(trainer, batch):
    trainer.model.eval()  # no dropout: both trainers hold the same student weights
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


@pytest.mark.parametrize("perturbation", ["none", "mean"])
def test_cache_at_k_equal_v_reproduces_the_online_loss(online_kd, online_crr, tmp_path, perturbation):
    base = online_crr if perturbation == "mean" else online_kd
    online = _twin(base, kd_loss="jsd", kd_beta=0.3)
    cache = str(tmp_path / "cache")
    manifest = build_teacher_cache(online, cache, top_k=V, dtype="float32", shard_size=2, progress=False)
    assert manifest.complete and manifest.top_k == V and manifest.num_shards == -(-manifest.num_rows // 2)
    cached = _twin(online, teacher_cache=cache)
    assert cached.args.kd_loss == "jsd" and (cached.token_permutation is not None) == (perturbation == "mean")
    batch = _first_batch(cached)
    assert batch[CACHE_ROW].tolist() == [0, 1]
    target = cached.teacher_targets(batch)[0]
    assert isinstance(target, SparseTarget) and torch.isneginf(target.tail).all()
    online_loss = _loss(online, batch)
    with mock.patch("distill.distillation.trainer.run_teacher",
                    side_effect=AssertionError("the teacher ran although a cache was given")):
        with torch.no_grad():  # the default step is the fused one, and it reads the cache
            assert cached.fused_loss(cached.model, batch) is not None
        assert _loss(cached, batch) == pytest.approx(online_loss, rel=1e-5)
    with torch.no_grad():  # the plain step from the cache agrees with the fused one
        plain = cached.distillation_step_loss(cached.model, batch, fused=False)[0].item()
    assert plain == pytest.approx(_loss(cached, batch), rel=1e-5)
    if perturbation == "mean":  # the perturbed target was stored, not the plain teacher's
        dense, _ = online.teacher_targets(batch)
        plain = torch.log_softmax(online.teacher(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
                                  / 2.0, -1)
        stored = torch.full_like(dense, -torch.inf).scatter_(-1, target.ids, target.logprobs)
        torch.testing.assert_close(stored, dense, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(dense, plain, atol=1e-3)


def test_top_64_cache_matches_the_top_64_of_the_online_target(online_crr, tmp_path):
    online = _twin(online_crr)  # a fresh Trainer: each one re-initialises accelerate's shared state
    cache = str(tmp_path / "cache")
    manifest = build_teacher_cache(online, cache, top_k=64, progress=False)
    assert manifest.ids_dtype == "uint16" and manifest.logprobs_dtype == "float16"
    assert manifest.bytes_per_token <= 400
    batch = _first_batch(online)
    dense, _ = online.teacher_targets(batch)
    target = TeacherCache(cache).targets({**batch, CACHE_ROW: torch.tensor([0, 1])})
    real = batch["attention_mask"].bool()
    want_lp, want_ids = dense.topk(64, -1)
    assert torch.equal(target.ids.sort(-1).values[real], want_ids.sort(-1).values[real])
    torch.testing.assert_close(target.logprobs.sort(-1).values[real], want_lp.sort(-1).values[real], atol=2e-2,
                               rtol=2e-3)  # float16 storage
    want_tail = torch.log1p(-want_lp.exp().sum(-1))
    torch.testing.assert_close(target.tail[real], want_tail[real], atol=2e-3, rtol=2e-3)


def test_mismatches_are_one_clear_error_before_training(online_crr, tiny_args, tmp_path):
    online = _twin(online_crr)
    cache = str(tmp_path / "cache")
    build_teacher_cache(online, cache, top_k=8, progress=False)
    with pytest.raises(ConfigError, match="temperature 2.0") as err:  # the whole path: before any training step
        build_trainer(_args(tiny_args, **CRR, teacher_cache=cache, temperature=3.0))
    assert "\n" not in str(err.value) and "distill cache-teacher" in str(err.value)
    TeacherCache(cache).check(online)  # the matching run is accepted

    other_tok = copy.deepcopy(online.processing_class)
    other_tok.add_tokens(["<extra>"])
    other_pairs = online.token_permutation.clone()
    other_pairs[[0, 1]] = other_pairs[[1, 0]]
    cases = [({"args": {"block_size": 32}}, "block_size 16"),
             ({"train_dataset": online.train_dataset.select(range(len(online.train_dataset) - 1))},
              "other training rows"),
             ({"args": {"perturbation": "max"}}, "perturbation 'mean'"),
             ({"args": {"perturbation": "interpolate", "perturbation_lambda": 0.3}}, "perturbation 'mean'"),
             ({"args": {"teacher_cache_top_k": 64}}, "teacher_cache_top_k 8"),
             ({"token_permutation": other_pairs}, "other gendered token pairs"),
             ({"processing_class": other_tok}, "another tokenizer"),
             ({"teacher": copy.deepcopy(online.teacher).to(torch.bfloat16)}, "another teacher")]
    for change, message in cases:
        run = SimpleNamespace(**{k: getattr(online, k) for k in ("args", "processing_class", "train_dataset",
                                                                  "token_permutation", "teacher", "accelerator")})
        for key, value in change.items():
            setattr(run, key, dataclasses.replace(online.args, **value) if key == "args" else value)
        with pytest.raises(ConfigError, match=message) as err:
            TeacherCache(cache).check(run)
        assert "\n" not in str(err.value) and "distill cache-teacher" in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="alpha_cos must be 0"):
        _args(tiny_args, teacher_cache=cache, alpha_cos=1.0)
    with pytest.raises(ConfigError, match="not a teacher cache"):
        TeacherCache(str(tmp_path))


def test_interrupted_build_resumes_from_finished_shards_and_refuses_to_train_meanwhile(online_kd, tmp_path,
                                                                                        monkeypatch):
    from distill.distillation import teacher_cache as tc

    trainer = _twin(online_kd)
    cache = str(tmp_path / "cache")
    real_write, written = tc._write_shard, []

    def crash_after_two(table, path):
        if len(written) == 2:
            raise KeyboardInterrupt
        real_write(table, path)
        written.append(path)

    monkeypatch.setattr(tc, "_write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(trainer, cache, top_k=16, shard_size=1, progress=False)
    n_rows = len(trainer.train_dataset)
    assert n_rows > 2 and sorted(glob.glob(os.path.join(cache, "shards", "*.arrow"))) == sorted(written)
    with pytest.raises(ConfigError, match=rf"incomplete \(2/{n_rows} shards\)"):
        TeacherCache(cache)
    before = {p: os.stat(p).st_mtime_ns for p in written}
    forwards = []
    real_targets = trainer.teacher_targets
    monkeypatch.setattr(trainer, "teacher_targets", lambda b: forwards.append(len(b["input_ids"])) or real_targets(b))
    monkeypatch.setattr(tc, "_write_shard", real_write)
    build_teacher_cache(trainer, cache, top_k=16, shard_size=1, progress=False)
    assert sum(forwards) == n_rows - 2  # the two finished shards were not recomputed
    assert {p: os.stat(p).st_mtime_ns for p in written} == before
    resumed = TeacherCache(cache).dataset
    fresh_dir = str(tmp_path / "fresh")
    build_teacher_cache(trainer, fresh_dir, top_k=16, shard_size=1, progress=False)
    fresh = TeacherCache(fresh_dir).dataset
    assert list(resumed["row"]) == list(range(n_rows))
    for col in ("topk_ids", "topk_logprobs", "tail_logprob"):
        assert all((a == b).all() for a, b in zip(resumed[col], fresh[col]))
    assert os.path.isfile(shard_path(cache, n_rows - 1))
    with pytest.raises(ConfigError, match="another build"):  # a different build into the same directory
        build_teacher_cache(trainer, cache, top_k=8, shard_size=1, progress=False)


def test_cli_cache_then_dp_training_from_the_cache(tiny_args, tmp_path, tiny_teacher_dir):
    import yaml

    from distill.cli import main

    cfg = dict(teacher_model_name_or_path=tiny_teacher_dir, student_num_layers=2, dataset_name="builtin:tiny",
               block_size=16, max_train_samples=12, packing=False, per_device_train_batch_size=4,
               per_device_eval_batch_size=4, validation_split_percentage=0, use_cpu=True, report_to="none",
               save_strategy="no", max_steps=2, alpha_cos=0.0, perturbation="mean", cda="two_sided",
               kd_loss="reverse_kl", dp={"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cache = str(tmp_path / "cache")
    assert main(["cache-teacher", "--config", str(path), "--output_dir", cache, "--no_progress",
                 "--teacher_cache_top_k", "32"]) == 0
    assert TeacherCache(cache).manifest.top_k == 32
    args = _args(tiny_args, **{k: v for k, v in cfg.items() if k not in ("dp",)}, dp_enabled=True,
                 dp_noise_multiplier=1.0, teacher_cache=cache, output_dir=str(tmp_path / "student"))
    trainer = run_training(args)
    assert trainer.privacy is not None and trainer.teacher_cache is not None
    assert os.path.isfile(tmp_path / "student" / "privacy.json")
    kd = [h["loss_kd"] for h in trainer.state.log_history if "loss_kd" in h]
    assert kd and all(torch.isfinite(torch.tensor(kd))) and min(kd) > 0


def test_a_deleted_or_truncated_shard_is_refused_before_any_work(online_kd, tiny_args, tmp_path, monkeypatch,
                                                                   capsys):
    import json

    from distill.cli import main as cli_main
    from distill.distillation import train as train_mod

    trainer = _twin(online_kd)
    cache = str(tmp_path / "cache")
    manifest = build_teacher_cache(trainer, cache, top_k=8, shard_size=2, progress=False)
    assert len(manifest.shards) == manifest.num_shards >= 2
    assert all(r["bytes"] == os.path.getsize(shard_path(cache, i)) and len(r["fingerprint"]) == 32
               for i, r in enumerate(manifest.shards))
    monkeypatch.setattr(train_mod, "build_trainer", mock.Mock(side_effect=AssertionError("work started")))
    args = _args(tiny_args, teacher_cache=cache, output_dir=str(tmp_path / "student"))
    one = shard_path(cache, 1)
    data = open(one, "rb").read()
    with open(one, "wb") as fh:  # truncated
        fh.write(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="shard-00001.arrow is .* bytes but was .*cut short") as err:
        run_training(args)
    assert "rebuild with distill cache-teacher" in str(err.value) and "\n" not in str(err.value)
    with open(one, "wb") as fh:  # same size, other bytes
        fh.write(bytes(len(data)))
    with pytest.raises(ConfigError, match="changed since it was built"):
        run_training(args)
    os.remove(shard_path(cache, 0))  # deleted
    with pytest.raises(ConfigError, match="shard-00000.arrow is missing .*rebuild with distill cache-teacher"):
        run_training(args)
    assert cli_main(["train", "--teacher_model_name_or_path", args.teacher_model_name_or_path, "--dataset_name",
                     "builtin:tiny", "--teacher_cache", cache, "--output_dir", args.output_dir]) == 2
    err_lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err_lines) == 1 and "distill train: error:" in err_lines[0] and "is missing" in err_lines[0]
    assert not os.path.exists(args.output_dir)
    # an older manifest (no shard sizes): existence is still checked, and an unreadable shard is one error
    path = os.path.join(cache, "manifest.json")
    raw = json.load(open(path))
    raw.pop("shards")
    json.dump(raw, open(path, "w"))
    with pytest.raises(ConfigError, match="shard-00000.arrow is missing"):
        run_training(args)
    # the same cache-teacher command rebuilds the missing and damaged shards
    trainer = _twin(online_kd)  # a fresh accelerator: the configs above reset accelerate's shared state
    build_teacher_cache(trainer, cache, top_k=8, shard_size=2, progress=False)
    TeacherCache(cache).check(trainer)
    raw = json.load(open(path))
    raw.pop("shards")
    json.dump(raw, open(path, "w"))
    with open(one, "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="could not be read.*rebuild with distill cache-teacher"):
        TeacherCache(cache)
