"""Llama-, Qwen2- and Mistral-architecture teachers and students: layer copy, DP clipping, fused loss, CRR, cache.

Tiny random configs (4 layers, width 64, grouped-query attention, RMSNorm, untied head) with GPT-2's tokenizer,
saved as local directories once per session; no downloads. Qwen2 uses its sliding window on the last two layers
(``layer_types`` / ``max_window_layers``) and Mistral a sliding window, so the per-layer config fields matter.
"""

import copy
import dataclasses
import json
import logging
import shutil

import pytest
import torch
from torch import nn
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, Qwen2Config)

from distill.counterfactual.token_pairs import TokenSwapper, gender_token_pairs, scan_token_pairs
from distill.distillation.student import build_student
from distill.distillation.teacher_cache import build_teacher_cache
from distill.distillation.train import build_trainer
from distill.distillation.trainer import DistillationTrainer
from distill.divergences import KD_LOSSES
from distill.errors import ConfigError, DistillError
from distill.privacy import BookKeepingClipper, RecordLayout, freeze_embeddings
from distill.privacy.opacus_modes import OpacusGhostClipper, OpacusHooksClipper

from test_privacy_clipping import _brute_force, _row_loss  # the per-record autograd loop of the GPT-2 tests

ARCHS = ("llama", "qwen2", "mistral")
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             tie_word_embeddings=False, max_position_embeddings=64)


def _config(arch, vocab_size, **kw):
    shape = {**SHAPE, **kw}
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, **shape)
    if arch == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, use_sliding_window=True, sliding_window=8, max_window_layers=2,
                           **shape)
    return MistralConfig(vocab_size=vocab_size, sliding_window=8, **shape)


def _save(model, tok, path):
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def arch_dirs(tmp_path_factory, gpt2_tok):
    """``{arch: dir}`` of tiny random teachers, plus ``small_llama``: a 2-layer, 32-wide Llama student."""
    root = tmp_path_factory.mktemp("archs")
    dirs = {}
    for seed, arch in enumerate(ARCHS):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_config(arch, len(gpt2_tok)))
        dirs[arch] = _save(model, gpt2_tok, root / arch)
    torch.manual_seed(9)
    small = LlamaForCausalLM(_config("llama", len(gpt2_tok), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2))
    dirs["small_llama"] = _save(small, gpt2_tok, root / "small_llama")
    return dirs


#: a few short unpacked rows (DP needs packing off), no evaluation
SMALL = dict(max_train_samples=8, block_size=16, packing=False, per_device_train_batch_size=2,
             per_device_eval_batch_size=2, validation_split_percentage=0, eval_strategy="no", max_steps=2,
             student_num_layers=2, dataset_name="builtin:tiny", learning_rate=1e-3, logging_steps=1,
             report_to="none", save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)
CRR = dict(cda="two_sided", perturbation="mean")
DP = dict(dp_enabled=True, dp_noise_multiplier=1.0, dp_max_grad_norm=1.0)


def _args(teacher_dir, output_dir, **kw):
    """``tiny_args`` of tests/conftest.py for these teachers (without training conftest's GPT-2 teacher)."""
    from distill.distillation.config import DistillationConfig

    return DistillationConfig(**{**SMALL, "teacher_model_name_or_path": teacher_dir, "output_dir": str(output_dir),
                                 **kw})


@pytest.fixture(scope="module")
def crr_trainers(arch_dirs, tmp_path_factory):
    """``arch -> trainer`` with CRR (two-sided CDA + mean perturbation) and ``alpha_cos``, built on first use."""
    built = {}

    def get(arch):
        if arch not in built:
            args = _args(arch_dirs[arch], tmp_path_factory.mktemp(f"crr-{arch}"), alpha_cos=1.0, temperature=2.0,
                         **CRR)
            built[arch] = build_trainer(args)
        return built[arch]

    return get


def _twin(trainer, output_dir, train_dataset=None, **changes):
    """A trainer on ``trainer``'s data, teacher and (copied) student weights with config ``changes``."""
    args = dataclasses.replace(trainer.args, output_dir=str(output_dir), **changes)
    return DistillationTrainer(model=copy.deepcopy(trainer.model), args=args, teacher_model=trainer.teacher,
                               processing_class=trainer.processing_class,
                               train_dataset=trainer.train_dataset if train_dataset is None else train_dataset)


# ---- 1. the student: chosen teacher layers, consistent per-layer config ----------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_student_layers_equal_the_chosen_teacher_layers(arch_dirs, arch, tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(arch_dirs[arch])
    student = build_student(teacher, layers=[1, 3])
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for s_idx, t_idx in enumerate([1, 3]):
        own = [k for k in s_state if k.startswith(f"model.layers.{s_idx}.")]
        assert own
        for k in own:
            assert torch.equal(s_state[k], t_state[k.replace(f"layers.{s_idx}.", f"layers.{t_idx}.", 1)]), k
    for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(s_state[k], t_state[k]), k
    assert s_state["lm_head.weight"].data_ptr() != s_state["model.embed_tokens.weight"].data_ptr()  # untied
    if arch == "qwen2":  # layers 2 and 3 of the teacher use the sliding window
        assert teacher.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
        assert student.config.layer_types == ["full_attention", "sliding_attention"]
        assert student.config.max_window_layers == 1
    # the saved student reloads with the same config and outputs
    student.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert getattr(reloaded.config, "layer_types", None) == getattr(student.config, "layer_types", None)
    ids = torch.randint(0, 1000, (2, 20))
    torch.testing.assert_close(reloaded.eval()(input_ids=ids).logits, student.eval()(input_ids=ids).logits)


# ---- 2. per-record DP clipping with RMSNorm and bias-free Linear layers ----------------------------------------
def _dp_student(arch, seed=0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, 300, num_hidden_layers=2, hidden_size=32,
                                                     intermediate_size=48)).train()
    frozen = freeze_embeddings(model)
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= set(frozen)  # an untied head is frozen too
    return model


def _batch(B=6, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0
    pos = (mask.cumsum(-1) - 1).clamp_min(0).contiguous()
    return ids, mask, pos


def _clip(clipper, model, ids, mask, pos, layout, C):
    summed = {}
    with clipper.capture():
        loss = _row_loss(model, ids, mask, pos)
    norms, factors = clipper.clip_and_accumulate(loss, layout, C, summed)
    clipper.remove()
    return norms, factors, summed


CLIPPERS = {"fast": lambda m, C: BookKeepingClipper(m), "hooks": lambda m, C: OpacusHooksClipper(m),
            "ghost": lambda m, C: OpacusGhostClipper(m, C)}


@pytest.mark.parametrize("arch,mode", [("llama", "fast"), ("llama", "hooks"), ("llama", "ghost"),
                                       ("qwen2", "fast"), ("mistral", "fast")])
def test_dp_clipping_equals_the_per_record_loop(arch, mode):
    model = _dp_student(arch)
    kinds = {type(m).__name__ for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))}
    assert any(k.endswith("RMSNorm") for k in kinds) and "Linear" in kinds
    ids, mask, pos = _batch()
    # ghost clips rows; fast and hooks clip records, here a record with its counterfactual row
    layout = RecordLayout(None if mode == "ghost" else torch.tensor([0, 1, 1, 2, 3, 3]), ids.shape[0])
    C = 0.05
    norms, factors, summed = _clip(CLIPPERS[mode](model, C), model, ids, mask, pos, layout, C)
    params, grads, ref_norms = _brute_force(model, ids, mask, pos, layout)
    assert (ref_norms > C).any()
    torch.testing.assert_close(norms.double(), ref_norms, rtol=1e-4, atol=1e-6)
    for i, p in enumerate(params):
        ref = sum(factors[r] * grads[r][i] for r in range(layout.num_records))
        torch.testing.assert_close(summed[id(p)], ref, rtol=1e-4, atol=1e-6)


class _TorchRMSNormNet(nn.Module):
    """torch's own ``nn.RMSNorm`` (``eps=None``) between bias-free Linear layers, ``[B, T, d]`` in and out."""

    def __init__(self, d=8):
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(d, d, bias=False), nn.RMSNorm(d), nn.Linear(d, d, bias=False)

    def forward(self, x):
        return self.out(self.norm(self.inp(x)))


class _Scale(nn.Module):
    """A layer the fast clipper does not know."""

    def __init__(self, d=8):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x):
        return x * self.scale


def _per_record_reference(model, x, loss_fn, C):
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.autograd.grad(loss_fn(model(x[r:r + 1])).sum(), params) for r in range(len(x))]
    norms = torch.stack([torch.sqrt(sum(g.pow(2).sum() for g in gs)) for gs in grads])
    factors = (C / (norms + 1e-6)).clamp(max=1.0)
    return params, norms, [sum(factors[r] * grads[r][i] for r in range(len(x))) for i in range(len(params))]


def test_torch_rmsnorm_is_clipped_and_unknown_layers_point_to_hooks():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 8)
    loss_fn = lambda y: y.pow(2).mean(dim=(1, 2))  # noqa: E731
    C = 0.1
    for model, clipper_of in ((_TorchRMSNormNet(), BookKeepingClipper),
                              (nn.Sequential(nn.Linear(8, 8), _Scale()), OpacusHooksClipper)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        clipper, summed = clipper_of(model), {}
        with clipper.capture():
            loss = loss_fn(model(x))
        norms, _ = clipper.clip_and_accumulate(loss, RecordLayout(None, len(x)), C, summed)
        clipper.remove()
        params, ref_norms, ref = _per_record_reference(model, x, loss_fn, C)
        torch.testing.assert_close(norms, ref_norms, rtol=1e-4, atol=1e-6)
        for p, r in zip(params, ref):
            torch.testing.assert_close(summed[id(p)], r, rtol=1e-4, atol=1e-6)
    with pytest.raises(DistillError, match=r"'1' \(_Scale\) has trainable parameters: freeze it or use dp_mode hooks"):
        BookKeepingClipper(nn.Sequential(nn.Linear(8, 8), _Scale()))


# ---- 3. the trainer on each architecture ---------------------------------------------------------------------
def _grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


#: every divergence on Llama (the divergences see only logits), the default one on the others
FUSED_CASES = [("llama", kd) for kd in KD_LOSSES] + [("qwen2", "forward_kl"), ("mistral", "forward_kl")]


@pytest.mark.parametrize("arch,kd_loss", FUSED_CASES)
def test_fused_loss_equals_plain_loss(crr_trainers, arch, kd_loss):
    trainer = crr_trainers(arch)
    assert trainer._student_head is not None and trainer._teacher_split is not None  # the fused path applies
    model = trainer.model.eval()
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    trainer.args.kd_loss = kd_loss
    try:
        results = {}
        for fused in (True, False):
            model.zero_grad(set_to_none=True)
            loss, parts, outputs = trainer.distillation_step_loss(model, batch, per_row=True, fused=fused)
            assert (outputs.logits.shape[1] == 0) == fused
            loss.sum().backward()
            results[fused] = loss.detach(), parts, _grads_of(model)
    finally:
        trainer.args.kd_loss = "forward_kl"
        model.zero_grad(set_to_none=True)
    (lf, pf, gf), (lp, pp, gp) = results[True], results[False]
    torch.testing.assert_close(lf, lp, rtol=1e-5, atol=1e-6)
    assert set(pf) == set(pp) and {"loss_kd", "loss_lm", "loss_cos", "crr_swapped_share"} <= set(pf)
    for k in pf:
        torch.testing.assert_close(pf[k], pp[k], rtol=1e-5, atol=1e-6, msg=k)
    assert gf.keys() == gp.keys() and gf
    for k in gf:
        torch.testing.assert_close(gf[k], gp[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("arch", ARCHS)
def test_crr_training_and_teacher_cache_round_trip(crr_trainers, tmp_path, arch):
    trainer = crr_trainers(arch)
    assert trainer.token_swapper.num_pairs > 60
    start = copy.deepcopy(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 2
    assert not torch.equal(trainer.model.model.layers[0].mlp.up_proj.weight, start.model.layers[0].mlp.up_proj.weight)
    cache = str(tmp_path / "cache")
    manifest = build_teacher_cache(trainer, cache, top_k=16, shard_size=4, progress=False)
    assert manifest.top_k == 16
    cached = _twin(trainer, tmp_path / "cached", teacher_cache=cache, alpha_cos=0.0)
    cached.model.load_state_dict(start.state_dict())
    assert cached.teacher_cache is not None
    cached.train()
    assert cached.state.global_step == 2


#: every mode on Llama; Qwen2 and Mistral with the book-keeping and the opacus hooks
DP_CASES = [("llama", "fast"), ("llama", "hooks"), ("llama", "ghost"), ("qwen2", "fast"), ("mistral", "hooks")]


@pytest.mark.parametrize("arch,mode", DP_CASES)
def test_dp_sgd_runs_in_each_mode(crr_trainers, tmp_path, arch, mode):
    crr = crr_trainers(arch)
    data = crr.train_dataset
    if mode == "ghost":  # ghost clips rows: each row its own record (no counterfactual row grouped with it)
        data = data.remove_columns("record_id")
    # KD on the CRR data (fast and hooks: records with their counterfactual rows); no token swapper to build
    trainer = _twin(crr, tmp_path, train_dataset=data, dp_mode=mode, alpha_cos=0.0, perturbation="none", **DP)
    student = trainer.model
    assert not student.lm_head.weight.requires_grad and not student.model.embed_tokens.weight.requires_grad
    norm = student.model.layers[0].input_layernorm
    assert norm.weight.requires_grad and type(norm).__name__.endswith("RMSNorm")
    before = norm.weight.detach().clone()
    trainer.train()
    assert trainer.state.global_step == 2
    assert not torch.equal(norm.weight, before)  # the RMSNorm weight was trained under DP
    eps = [h["dp/epsilon"] for h in trainer.state.log_history if "dp/epsilon" in h and "loss" in h]
    assert len(eps) == 2 and eps[0] > 0


# ---- 4. a student of another size or architecture -----------------------------------------------------------
def test_student_of_another_size_and_architecture(arch_dirs, tmp_path):
    args = _args(arch_dirs["qwen2"], tmp_path / "kd", student_model_name_or_path=arch_dirs["small_llama"])
    trainer = build_trainer(args)
    assert type(trainer.model).__name__ == "LlamaForCausalLM" and trainer.model.config.hidden_size == 32
    trainer.train()
    assert trainer.state.global_step == 2
    with pytest.raises(ConfigError, match="alpha_cos compares the last hidden states.*64 wide.*32"):
        DistillationTrainer(args=dataclasses.replace(args, alpha_cos=1.0), processing_class=trainer.processing_class)


# ---- 5. CRR token pairs from the teacher's tokenizer -----------------------------------------------------------
def test_multi_token_words_are_skipped_and_reported(gpt2_tok, caplog):
    scan = scan_token_pairs(gpt2_tok)
    assert scan.pairs == gender_token_pairs(gpt2_tok)
    assert ("HE", "SHE") in scan.multi_token  # "SHE" is two GPT-2 tokens: not a token pair, as before
    assert len(gpt2_tok("SHE", add_special_tokens=False)["input_ids"]) > 1
    assert scan.skipped["multi_token"] == len(scan.multi_token) > 0
    with caplog.at_level(logging.INFO, logger="distill.counterfactual.token_pairs"):
        swapper = TokenSwapper.from_tokenizer(gpt2_tok)
    assert swapper.skipped == scan.skipped and swapper.to("cpu").skipped == scan.skipped
    assert f"{len(scan.pairs)} gendered token pairs; skipped {sum(scan.skipped.values())} candidates" in caplog.text
    # a multi-token word is left as it is by the token-level swap; the single-token pronoun is swapped
    ids = torch.tensor([gpt2_tok("SHE said he", add_special_tokens=False)["input_ids"]])
    assert gpt2_tok.decode(swapper.swap_tokens(ids)[0]) == "SHE said she"


def test_audit_and_evaluate_commands_run_on_a_llama_model(arch_dirs, tmp_path, run_cli):
    """`distill audit` (MIA + canary exposure) and `distill evaluate --suite all` on a Llama-architecture model."""
    members, non_members = tmp_path / "members.txt", tmp_path / "non_members.txt"
    members.write_text("The nurse said that she was tired.\nThe pilot said that he was late.\n")
    non_members.write_text("The plumber said that he was busy.\nThe secretary said that she was away.\n")
    llama = tmp_path / "llama"
    shutil.copytree(arch_dirs["llama"], llama)  # the audit writes its report into the model directory
    rc, _, err = run_cli("audit", "--model", llama, "--members", members, "--non-members", non_members,
                         "--canary-seed", 7, "--num-candidates", 15, "--num-beams", 2, "--reference", arch_dirs["qwen2"])
    assert rc == 0, err[-2000:]
    report = json.loads((llama / "audit.json").read_text())
    mia = report["membership_inference"]
    assert 0.0 <= mia["loss_threshold"]["auc"] <= 1.0 and 0.0 <= mia["reference_calibrated"]["auc"] <= 1.0
    assert report["canaries"][0]["exposure"] >= 0
    out = tmp_path / "eval"
    rc, _, err = run_cli("evaluate", "--model", arch_dirs["llama"], "--suite", "all", "--occupations", "nurse,pilot",
                         "--ceat-samples", 5, "--max-new-tokens", 4, "--num-samples", 1, "--output_dir", out)
    assert rc == 0, err[-2000:]
    fair = json.loads((out / "fairness.json").read_text())
    assert {"intrinsic", "downstream", "prediction_sensitivity"} <= set(fair)


def test_the_tiny_teacher_comes_in_a_llama_architecture(gpt2_tok):
    from distill.builtin.tiny_models import TinyTeacherSpec, tiny_causal_lm
    from distill.errors import ConfigError

    model = tiny_causal_lm(TinyTeacherSpec(n_layer=2, n_embd=32, n_head=4, architecture="llama"), gpt2_tok)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == 2
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    with pytest.raises(ConfigError, match="gpt2 or llama"):
        tiny_causal_lm(TinyTeacherSpec(architecture="rnn"), gpt2_tok)
