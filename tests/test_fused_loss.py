"""The chunked, fused output-layer loss equals the plain loss on full logits: value, parts and gradients.

Reference: the student's full logits, the teacher's full log-probs from its plain forward (x̃ run in full, no
prefix skipping) and :func:`distill.distillation.losses.distillation_loss`. Tiny random GPT-2s, chunks of 5 positions (so
chunks straddle rows and the last one is short), right padding in one row.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.counterfactual.token_pairs import TokenSwapper
from distill.distillation.fused_loss import (PLAIN_LOSS_COPIES, auto_chunk_size, fused_distillation_loss,
                                             plain_loss_fits, prefers_plain_loss)
from distill.distillation.losses import distillation_loss, teacher_log_probs
from distill.privacy.bookkeeping import BookKeepingClipper
from distill.privacy.engine import freeze_embeddings
from distill.privacy.opacus_modes import OpacusGhostClipper, OpacusHooksClipper
from distill.privacy.records import RecordLayout
from distill.distillation.teacher_side import (Counterfactual, hidden_output_layer, no_logits,
                                               role_reversed_teacher_states, role_reversed_teacher_targets,
                                               split_output_layer)
from distill.distillation.teacher_side import SplitTeacherSide as TeacherSide
from distill.distillation.teacher_side import CachedTeacherSide, DenseTeacherSide, run_teacher
from distill.distillation.losses import SparseTarget

V = 53
PAIRS = [(3, 4), (7, 11), (20, 30)]


def _gpt2(layers, seed):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=16, n_layer=layers, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def models():
    return _gpt2(2, 0), _gpt2(1, 1)


def _swapper():
    perm = torch.arange(V)
    for a, b in PAIRS:
        perm[a], perm[b] = b, a
    return TokenSwapper(perm, torch.zeros(V, dtype=torch.bool), torch.zeros(V, dtype=torch.bool))


def _batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (3, 9), generator=g)
    ids[0, 4], ids[1, 0], ids[1, 6] = 3, 11, 30  # rows 0 and 1 hold gendered tokens (row 1 from position 0)
    ids[2] = torch.where(torch.isin(ids[2], torch.tensor([3, 4, 7, 11, 20, 30])), 5, ids[2])  # row 2: none
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # right padding
    ids[0, 7:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask}, labels


def _reference(student, teacher, inputs, labels, mode, lam, temperature, weights, per_row):
    out = student(**inputs, output_hidden_states=True)
    with torch.no_grad():
        if mode == "none":
            t_out = teacher(**inputs, output_hidden_states=True)
            logprobs, t_hidden = teacher_log_probs(t_out.logits, temperature), t_out.hidden_states[-1]
        else:
            logprobs, t_hidden, _ = role_reversed_teacher_targets(teacher, inputs, _swapper(), temperature=temperature,
                                                                  mode=mode, lam=lam, need_hidden=True)
    return distillation_loss(out.logits, logprobs, labels, inputs["attention_mask"], temperature=temperature,
                             student_hidden=out.hidden_states[-1], teacher_hidden=t_hidden, per_row=per_row, **weights)


def _fused(student, teacher, inputs, labels, mode, lam, temperature, weights, per_row, chunk_size=5):
    head = hidden_output_layer(student)
    body, t_head = split_output_layer(teacher)
    out = student(**inputs, output_hidden_states=True, logits_to_keep=no_logits())
    assert out.logits.shape[1] == 0  # no logits computed by the forward
    swapper = _swapper()
    states, cf_states, slot, t_hidden, _ = role_reversed_teacher_states(body, inputs, swapper, need_hidden=True)
    cf = Counterfactual(cf_states, slot, swapper.perm, swapper.gendered_ids, mode, lam)
    side = TeacherSide(states, t_head, temperature, cf)
    return fused_distillation_loss(out.hidden_states[-1], head, side, labels, inputs["attention_mask"],
                                   temperature=temperature, teacher_hidden=t_hidden, per_row=per_row,
                                   chunk_size=chunk_size, **weights)


def _loss_and_grads(fn, student, *args, per_row, seed=0):
    student.zero_grad(set_to_none=True)
    loss, parts = fn(student, *args, per_row=per_row)
    # per row: a random weight per row, as ghost clipping's second backward applies (exercises per-row scaling)
    scale = torch.rand(loss.shape, generator=torch.Generator().manual_seed(seed)) + 0.5 if per_row else 1.0
    (loss * scale).sum().backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    return loss.detach(), parts, grads


def _assert_same(a, b, rtol=1e-5, atol=1e-7):
    (la, pa, ga), (lb, pb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
    assert set(pa) == set(pb)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=rtol, atol=atol)
    assert set(ga) == set(gb) and ga
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol * 10, msg=k)


WEIGHTS = [dict(alpha_kd=1.0, alpha_lm=0.0), dict(alpha_kd=0.0, alpha_lm=1.0), dict(alpha_kd=5.0, alpha_lm=2.0),
           dict(alpha_kd=5.0, alpha_lm=2.0, alpha_cos=1.0), dict(alpha_kd=0.0, alpha_lm=0.0, alpha_cos=1.0)]
MODES = [("none", 0.5), ("mean", 0.5), ("max", 0.5), ("interpolate", 0.3), ("interpolate", 1.0)]


@pytest.mark.parametrize("mode,lam", MODES)
def test_teacher_side_kinds_give_one_target(models, mode, lam):
    """Dense (logits), split (hidden states, read by position or whole) and cached (k = V) give the same target."""
    teacher, _ = models
    inputs, _ = _batch()
    swapper = None if mode == "none" else _swapper()
    kw = dict(temperature=2.0, swapper=swapper, mode=mode, lam=lam, need_hidden=True)
    dense = run_teacher(teacher, inputs, **kw)
    lazy = run_teacher(teacher, inputs, split=split_output_layer(teacher), lazy=True, **kw)
    assert isinstance(dense.side, DenseTeacherSide) and isinstance(lazy.side, TeacherSide)
    assert dense.n_swapped == lazy.n_swapped == (None if swapper is None else 2)
    torch.testing.assert_close(lazy.hidden, dense.hidden)
    full = dense.side.log_probs()
    torch.testing.assert_close(lazy.side.log_probs(), full, rtol=1e-5, atol=1e-5)
    positions = torch.tensor([0, 4, 5, 10, 16, 26])  # rows 0, 1 (before and after a swap) and 2
    torch.testing.assert_close(lazy.side.targets(positions), full.flatten(0, 1)[positions], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense.side.targets(positions), full.flatten(0, 1)[positions])
    ids = torch.arange(V).expand(*full.shape[:2], V)
    cached = CachedTeacherSide(SparseTarget(ids, full, torch.full(full.shape[:2], -torch.inf)))
    torch.testing.assert_close(cached.targets(positions).logprobs, full.flatten(0, 1)[positions])
    assert cached.log_probs() is cached.target


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: "-".join(f"{k[6:]}{v:g}" for k, v in w.items()))
@pytest.mark.parametrize("per_row", [False, True], ids=["batch", "per_row"])
def test_fused_equals_plain_for_each_weighting(models, temperature, weights, per_row):
    teacher, student = models
    inputs, labels = _batch()
    args = (teacher, inputs, labels, "mean", 0.5, temperature, weights)
    _assert_same(_loss_and_grads(_fused, student, *args, per_row=per_row),
                 _loss_and_grads(_reference, student, *args, per_row=per_row))


@pytest.mark.parametrize("kd_loss", ["reverse_kl", "jsd", "tvd", "skew_forward_kl", "skew_reverse_kl"])
@pytest.mark.parametrize("per_row", [False, True], ids=["batch", "per_row"])
def test_fused_equals_plain_for_each_kd_loss(models, kd_loss, per_row):
    teacher, student = models
    inputs, labels = _batch()
    weights = dict(alpha_kd=5.0, alpha_lm=2.0, kd_loss=kd_loss, kd_beta=0.3, kd_skew_alpha=0.2)
    args = (teacher, inputs, labels, "mean", 0.5, 2.0, weights)
    fused = _loss_and_grads(_fused, student, *args, per_row=per_row)
    _assert_same(fused, _loss_and_grads(_reference, student, *args, per_row=per_row))
    forward = _loss_and_grads(_reference, student, *args[:-1], dict(alpha_kd=5.0, alpha_lm=2.0), per_row=per_row)
    assert not torch.allclose(fused[1]["loss_kd"], forward[1]["loss_kd"])  # the divergence was applied


@pytest.mark.parametrize("mode,lam", MODES)
@pytest.mark.parametrize("per_row,frozen_head", [(False, False), (True, False), (True, True)],
                         ids=["batch", "per_row", "per_row-frozen_head"])
def test_fused_equals_plain_for_each_perturbation(models, mode, lam, per_row, frozen_head):
    teacher, student = models
    student.lm_head.weight.requires_grad_(not frozen_head)  # tied: frozen under DP (gradients computed ahead)
    try:
        inputs, labels = _batch()
        args = (teacher, inputs, labels, mode, lam, 2.0, dict(alpha_kd=5.0, alpha_lm=2.0))
        _assert_same(_loss_and_grads(_fused, student, *args, per_row=per_row),
                     _loss_and_grads(_reference, student, *args, per_row=per_row))
    finally:
        student.lm_head.weight.requires_grad_(True)


def test_fused_chunk_size_does_not_change_the_result(models):
    teacher, student = models
    inputs, labels = _batch()
    args = (teacher, inputs, labels, "mean", 0.5, 2.0, dict(alpha_kd=1.0, alpha_lm=1.0))
    one = _fused(student, *args, per_row=False, chunk_size=1000)[0]
    for size in (1, 7):
        torch.testing.assert_close(_fused(student, *args, per_row=False, chunk_size=size)[0], one)
    assert auto_chunk_size(50257) == 166 and auto_chunk_size(50257, "cuda") == 1335 and auto_chunk_size(10**9) == 16


def test_fused_second_backward_through_the_graph_recomputes_the_same_gradients(models):
    teacher, student = models
    inputs, labels = _batch()
    loss, _ = _fused(student, teacher, inputs, labels, "mean", 0.5, 2.0, dict(alpha_kd=1.0, alpha_lm=1.0), per_row=False)
    student.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    first = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad(set_to_none=True)
    (3 * loss).backward()
    for n, p in student.named_parameters():
        torch.testing.assert_close(p.grad, 3 * first[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize("clipper_cls", [BookKeepingClipper, OpacusHooksClipper, OpacusGhostClipper],
                         ids=["fast", "hooks", "ghost"])
def test_fused_per_row_loss_clips_like_the_plain_one(clipper_cls, mode="max"):
    """Each DP mode's per-record norms and clipped gradient sums are the same from the fused per-row loss."""
    teacher = _gpt2(2, 0)
    results = []
    for fn in (_reference, _fused):
        student = _gpt2(1, 1).train()
        freeze_embeddings(student)
        clipper = clipper_cls(student, 0.05) if clipper_cls is OpacusGhostClipper else clipper_cls(student)
        inputs, labels = _batch()
        summed = {}
        with clipper.capture():
            loss, _ = fn(student, teacher, inputs, labels, mode, 0.5, 2.0, dict(alpha_kd=5.0, alpha_lm=2.0),
                         per_row=True)
        norms, factors = clipper.clip_and_accumulate(loss, RecordLayout(None, 3), 0.05, summed)
        clipper.remove()
        names = {id(p): n for n, p in student.named_parameters()}
        results.append((norms, factors, {names[k]: v for k, v in summed.items()}))
    (n1, f1, s1), (n2, f2, s2) = results
    torch.testing.assert_close(n1, n2, rtol=1e-5, atol=1e-7)
    assert (f1 < 1).any()  # some rows are clipped
    torch.testing.assert_close(f1, f2, rtol=1e-5, atol=1e-7)
    assert set(s1) == set(s2) and s1
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=1e-5, atol=1e-7, msg=k)


# ---- in the trainer ------------------------------------------------------------------------------------------------
def _trainer_batch(trainer):
    from distill.text_data import DistillationCollator

    tok = trainer.processing_class
    texts = ["She said that he was a nurse and she was a pilot.", "The doctor asked her to wait.", "It rained."]
    rows = [{"input_ids": tok(t)["input_ids"]} for t in texts]
    return trainer._prepare_inputs(DistillationCollator(pad_token_id=tok.pad_token_id)(rows))  # right-padded


def _trainer_loss_and_grads(trainer, inputs, fused: bool, largest=None):
    model = trainer.model.eval()  # no dropout: both steps see the same network
    model.zero_grad(set_to_none=True)
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        loss = trainer.distillation_step_loss(model, inputs, fused=fused)[0]
    loss.backward()
    if largest is not None:
        largest.append(max(sizes))
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("perturbation,kd_loss", [("none", "forward_kl"), ("mean", "forward_kl"), ("mean", "jsd")])
def test_trainer_step_is_fused_by_default_and_equals_the_plain_step(tiny_args, perturbation, kd_loss):
    from distill.distillation.trainer import DistillationTrainer

    trainer = DistillationTrainer(args=tiny_args(temperature=2.0, alpha_kd=5.0, alpha_lm=2.0, alpha_cos=1.0,
                                                 perturbation=perturbation, student_num_layers=4, kd_loss=kd_loss))
    assert trainer._student_head is not None and trainer.args.loss_chunk_size == "auto"
    trainer.args.loss_chunk_size = 7
    inputs = _trainer_batch(trainer)
    largest = []
    fused = _trainer_loss_and_grads(trainer, inputs, True, largest)
    plain = _trainer_loss_and_grads(trainer, inputs, False, largest)
    vocab_wide = inputs["input_ids"].numel() * trainer._student_head.weight.shape[0]
    assert largest[0] < vocab_wide <= largest[1]  # the plain step keeps [B, T, V] tensors for backward, fused none
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-7)
    for k in plain[1]:
        torch.testing.assert_close(fused[1][k], plain[1][k], rtol=1e-5, atol=1e-6, msg=k)


def test_loss_chunk_size_off_keeps_the_plain_path_and_bad_values_fail(tiny_args):
    from distill.errors import ConfigError
    from distill.distillation.trainer import DistillationTrainer

    assert DistillationTrainer(args=tiny_args(loss_chunk_size="off"))._student_head is None
    assert tiny_args(loss_chunk_size="512").loss_chunk_size == 512
    with pytest.raises(ConfigError, match="loss_chunk_size"):
        tiny_args(loss_chunk_size="-3")


def test_dp_per_row_loss_of_the_trainer_is_fused(tiny_args):
    """The per-row losses DP-SGD clips (``distillation_step_loss(per_row=True)``) come from the fused path."""
    from distill.distillation.trainer import DistillationTrainer

    trainer = DistillationTrainer(args=tiny_args(dp_enabled=True, dp_noise_multiplier=1.0, packing=False,
                                                 temperature=2.0, alpha_kd=5.0, alpha_lm=2.0))
    inputs = _trainer_batch(trainer)
    model = trainer.model.eval()
    assert not trainer.uses_fused_loss(inputs)  # auto: this small batch's [B, T, V] tensors fit, so plain by default
    fused, fused_parts, outputs = trainer.distillation_step_loss(model, inputs, per_row=True, fused=True)
    assert outputs.logits.shape[1] == 0  # the student's forward stopped before its output layer
    plain, plain_parts, _ = trainer.distillation_step_loss(model, inputs, per_row=True, fused=False)
    assert fused.shape == (3,)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused_parts["loss_kd"], plain_parts["loss_kd"], rtol=1e-5, atol=1e-7)


def test_bf16_split_teacher_runs_under_the_same_autocast_as_the_plain_forward(tiny_args):
    """bf16 on CPU: the teacher as body + output layer gives the plain forward's log-probs (both autocast), and
    the fused step the plain step's loss; without the autocast the split teacher would compute in float32."""
    from distill.distillation.trainer import DistillationTrainer

    trainer = DistillationTrainer(args=tiny_args(bf16=True, temperature=2.0, alpha_kd=1.0, alpha_lm=1.0,
                                                 perturbation="mean"))
    assert trainer._teacher_split is not None  # the probe runs under the forward's autocast too
    trainer.accelerator.prepare_model(trainer.model)  # as train() does: the student's forward under autocast
    inputs = _trainer_batch(trainer)
    split, _ = trainer.teacher_targets(inputs)
    saved, trainer._teacher_split = trainer._teacher_split, None
    plain, _ = trainer.teacher_targets(inputs)
    trainer._teacher_split = saved
    with torch.no_grad():  # float32 reference: how far bf16 is from it
        body, head = saved
        fp32 = teacher_log_probs(head(body(input_ids=inputs["input_ids"],
                                           attention_mask=inputs["attention_mask"]).last_hidden_state), 2.0)
    real = inputs["attention_mask"].bool()
    gap_paths = (split - plain)[real].abs().max()
    gap_fp32 = (plain - fp32)[real].abs().max()
    assert gap_paths < 0.1 * gap_fp32, (gap_paths, gap_fp32)
    fused = _trainer_loss_and_grads(trainer, inputs, True)[0]
    plain_loss = _trainer_loss_and_grads(trainer, inputs, False)[0]
    torch.testing.assert_close(fused, plain_loss, rtol=2e-3, atol=1e-4)


def test_auto_takes_the_plain_loss_only_on_a_cpu_where_its_tensors_fit():
    """``loss_chunk_size: auto``: GPT-2's vocabulary at 2 x 512 fits a 16 GB machine, 8 x 1024 does not; a GPU
    always takes the fused loss."""
    vocab, gb = 50257, 2**30
    assert plain_loss_fits(2 * 512, vocab, available=16 * gb)
    assert not plain_loss_fits(8 * 1024, vocab, available=16 * gb)
    assert plain_loss_fits(8 * 1024, vocab, available=80 * gb)  # a large GPU
    need = PLAIN_LOSS_COPIES * 4 * 1000 * vocab
    assert plain_loss_fits(1000, vocab, available=4 * need) and not plain_loss_fits(1000, vocab, available=4 * need - 1)
    assert plain_loss_fits(8 * 64, vocab)  # the tiny bench's shape, on whatever this machine has
    # a GPU takes the fused loss whatever it has free (faster and leaner there); a CPU the plain one where it fits
    assert prefers_plain_loss(2 * 512, vocab, "cpu", available=16 * gb)
    assert not prefers_plain_loss(8 * 1024, vocab, "cpu", available=16 * gb)
    assert not prefers_plain_loss(2 * 512, vocab, "cuda", available=140 * gb)
    assert not prefers_plain_loss(8 * 64, vocab, "cuda:0", available=140 * gb)
