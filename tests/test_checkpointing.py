"""Gradient checkpointing changes memory, not maths: with ``gradient_checkpointing: true`` the loss and the
gradients equal those without, for the fused loss, the plain loss, CRR, DP-SGD (``dp_mode: fast``; the opacus modes
are refused with a ConfigError naming it) and the teacher cache. Also the leaner student activations
(:mod:`distill.distillation.lean`): same outputs and gradients as the stock student.

Tiny GPT-2s, one batch of two short rows, dropout on (the recomputation replays the same dropout masks).
"""

import copy
import dataclasses

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.distillation.config import DistillationConfig
from distill.distillation import lean
from distill.distillation.lean import RECOMPUTE_SDPA, lean_student, recompute_attention
from distill.distillation.teacher_cache import build_teacher_cache
from distill.distillation.train import build_trainer
from distill.distillation.trainer import DistillationTrainer
from distill.errors import ConfigError

SMALL = dict(max_train_samples=4, block_size=16, per_device_train_batch_size=2, per_device_eval_batch_size=2,
             validation_split_percentage=0, eval_strategy="no", temperature=2.0, alpha_kd=1.0, alpha_lm=0.5)


@pytest.fixture(scope="module")
def online(tmp_path_factory, tiny_teacher_dir):
    args = DistillationConfig(output_dir=str(tmp_path_factory.mktemp("ckpt")), teacher_model_name_or_path=tiny_teacher_dir,
                              student_num_layers=2, dataset_name="builtin:tiny", learning_rate=1e-3, report_to="none",
                              save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, alpha_cos=0.5, **SMALL)
    return build_trainer(args)


def _twin(base, **changes):
    args = dataclasses.replace(base.args, **changes)
    return DistillationTrainer(model=copy.deepcopy(base.model), args=args, teacher_model=base.teacher,
                               processing_class=base.processing_class, train_dataset=base.train_dataset)


def _batch(trainer):
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(2)]))


def _step(trainer, batch, per_row=False):
    """Loss and gradients of one training-mode step (dropout on, same RNG stream for every trainer)."""
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    loss, _, _ = trainer.distillation_step_loss(trainer.model, dict(batch), per_row=per_row)
    (loss.sum() if per_row else loss).backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _assert_same(a, b):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("changes", [dict(loss_chunk_size=8), dict(loss_chunk_size="off"),
                                     dict(loss_chunk_size=8, perturbation="mean"),
                                     dict(loss_chunk_size="off", perturbation="mean")],
                         ids=["fused", "plain", "crr-fused", "crr-plain"])
def test_checkpointing_keeps_loss_and_gradients(online, changes):
    plain = _twin(online, **changes)
    ckpt = _twin(online, activation_checkpointing=True, **changes)  # (dataclasses.replace: the new name)
    assert ckpt.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    batch = _batch(plain)
    assert ckpt.uses_fused_loss(batch) == plain.uses_fused_loss(batch) == (changes["loss_chunk_size"] != "off")
    _assert_same(_step(plain, batch), _step(ckpt, batch))


def test_checkpointing_with_dp_fast_keeps_clipped_sums(online):
    dp = dict(dp_enabled=True, dp_mode="fast", dp_noise_multiplier=1.0, packing=False, alpha_cos=0.0,
              loss_chunk_size=8, perturbation="mean")
    results = []
    for extra in ({}, {"activation_checkpointing": True}):
        trainer = _twin(online, **dp, **extra)
        trainer.privacy.resolve(num_records=100, world_size=1)
        batch = _batch(trainer)
        trainer.model.train()
        torch.manual_seed(0)
        with trainer.privacy.clipping(trainer.model, batch.get("record_id"), 2) as clip:
            row_loss, _, _ = trainer.distillation_step_loss(trainer.model, dict(batch), per_row=True)
            clip.backward(row_loss)
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        results.append((row_loss.detach(), clip.norms.clone(),
                        [v.clone() for _, v in sorted((names[k], v) for k, v in trainer.privacy.summed.items())]))
    (l0, n0, s0), (l1, n1, s1) = results
    torch.testing.assert_close(l0, l1)
    torch.testing.assert_close(n0, n1, rtol=1e-4, atol=1e-6)
    assert len(s0) == len(s1) > 0
    for a, b in zip(s0, s1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_checkpointing_with_opacus_modes_is_refused_naming_fast(mode, tmp_path):
    with pytest.raises(ConfigError, match=f"dp_mode {mode} does not support activation_checkpointing.*dp_mode: fast"):
        DistillationConfig(output_dir=str(tmp_path), dp_enabled=True, dp_mode=mode, dp_noise_multiplier=1.0,
                           packing=False, activation_checkpointing=True)


def test_checkpointing_with_teacher_cache(online, tmp_path):
    base = _twin(online, alpha_cos=0.0, loss_chunk_size=8)
    cache = str(tmp_path / "cache")
    build_teacher_cache(base, cache, top_k=16, dtype="float32", shard_size=2, progress=False)
    for chunk in (8, "off"):
        plain = _twin(base, teacher_cache=cache, loss_chunk_size=chunk)
        ckpt = _twin(base, teacher_cache=cache, loss_chunk_size=chunk, activation_checkpointing=True)
        batch = _batch(plain)
        _assert_same(_step(plain, batch), _step(ckpt, batch))


def _saved_bytes_and_grads(model, ids):
    """One forward and backward (fixed dropout seed): the bytes autograd keeps (each storage once), the loss and the
    gradients."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(1)  # the same dropout masks in every model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = sum(n for ptr, n in storages.items() if ptr not in params)
    return kept, (loss.detach(), {n: p.grad for n, p in model.named_parameters()})


@pytest.fixture
def attention_cache_cleared():
    lean._fits_by_shape.clear()
    yield
    lean._fits_by_shape.clear()


@pytest.mark.parametrize("fits", [True, False])
def test_lean_student_computes_the_same_function(fits, monkeypatch, attention_cache_cleared):
    """Kept or recomputed, the lean student's attention gives the stock student's loss and gradients; recomputed, it
    keeps less for backward, and kept, as much as the stock student's attention core."""
    monkeypatch.setattr(lean, "ATTENTION_KEPT_SHARE", 1.0 if fits else 0.0)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    stock = GPT2LMHeadModel(cfg).train()
    recomputing_only = copy.deepcopy(stock)
    full = copy.deepcopy(stock)
    assert lean_student(full) == {"recompute_attention": True, "fused_gelu": 2}
    assert full.config._attn_implementation == RECOMPUTE_SDPA
    assert "_attn_implementation" not in full.config.to_dict() and full.config.activation_function == "gelu_new"
    assert recompute_attention(recomputing_only)
    ids = torch.randint(0, 97, (2, 16))
    stock_kept, stock_out = _saved_bytes_and_grads(stock, ids)
    attention_kept, attention_out = _saved_bytes_and_grads(recomputing_only, ids)
    _, full_out = _saved_bytes_and_grads(full, ids)
    _assert_same(stock_out, attention_out)
    _assert_same(stock_out, full_out)
    assert lean._fits_by_shape == {(2, 4, 16, 16, 2): fits}
    probabilities = 2 * 4 * 16 * 16 * 4 * cfg.n_layer  # one float32 [B, heads, T, T] per block
    if fits:
        assert attention_kept == stock_kept
    else:
        assert attention_kept <= stock_kept - 2 * probabilities  # at least the probabilities and the dropped ones


def test_attention_fits_counts_every_block_against_its_share():
    gb = 2**30
    heads, layers = 12, 6  # GPT-2 small's width, the recipe's student
    need = lambda b, t: lean.ATTENTION_KEPT_FLOATS * b * heads * t * t * 4 * layers  # noqa: E731
    assert lean.attention_fits(2, heads, 512, 512, layers, available=20 * gb)  # 0.5 GB: kept
    assert not lean.attention_fits(8, heads, 1024, 1024, layers, available=20 * gb)  # 7.8 GB: recomputed
    assert not lean.attention_fits(4, heads, 1024, 1024, layers, available=20 * gb)  # 3.9 GB > 2.5 GB
    exact = need(4, 1024) / lean.ATTENTION_KEPT_SHARE
    assert lean.attention_fits(4, heads, 1024, 1024, layers, available=int(exact) + 1)
    assert not lean.attention_fits(4, heads, 1024, 1024, layers, available=int(exact) - 1)
    assert not lean.attention_fits(4, heads, 1024, 1024, 2 * layers, available=int(exact) + 1)
