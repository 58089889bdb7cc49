import math

import pytest
import torch

from distill.distillation.losses import cosine_loss, distillation_loss, kd_loss, lm_loss, teacher_log_probs


def _hand_kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def _softmax(z, t):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_kd_loss_matches_hand_computation():
    t = 2.0
    s_logits = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    t_logits = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]
    mask = torch.tensor([[1, 0]])  # only the first position counts
    expected = t * t * _hand_kl(_softmax(t_logits[0], t), _softmax(s_logits[0], t))
    got = kd_loss(torch.tensor([s_logits]), teacher_log_probs(torch.tensor([t_logits]), t), mask, t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    both = t * t * (_hand_kl(_softmax(t_logits[0], t), _softmax(s_logits[0], t))
                    + _hand_kl(_softmax(t_logits[1], t), _softmax(s_logits[1], t))) / 2
    got_all = kd_loss(torch.tensor([s_logits]), teacher_log_probs(torch.tensor([t_logits]), t), None, t)
    assert got_all.item() == pytest.approx(both, rel=1e-6)


def test_kd_loss_zero_when_equal_and_positive_otherwise():
    z = torch.randn(2, 5, 7)
    assert kd_loss(z, teacher_log_probs(z, 1.5), None, 1.5).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, teacher_log_probs(torch.randn(2, 5, 7), 1.5), None, 1.5).item() > 0


def test_lm_loss_shifts_and_ignores_padding():
    logits = torch.randn(1, 4, 6)
    labels = torch.tensor([[1, 2, 3, -100]])
    expected = torch.nn.functional.cross_entropy(logits[0, :2], torch.tensor([2, 3]))
    assert lm_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cosine_loss_and_width_mismatch():
    h = torch.randn(2, 3, 4)
    assert cosine_loss(h, h, None).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(h, -h, None).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="alpha_cos"):
        cosine_loss(h, torch.randn(2, 3, 5), None)


def test_distillation_loss_combines_weighted_parts():
    s, t = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    hs, ht = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.randint(0, 9, (2, 4))
    mask = torch.ones(2, 4)
    tl = teacher_log_probs(t, 2.0)
    total, parts = distillation_loss(s, tl, labels, mask, temperature=2.0, alpha_kd=0.5, alpha_lm=2.0, alpha_cos=3.0,
                                     student_hidden=hs, teacher_hidden=ht)
    expected = 0.5 * kd_loss(s, tl, mask, 2.0) + 2.0 * lm_loss(s, labels) + 3.0 * cosine_loss(hs, ht, mask)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"loss_kd", "loss_lm", "loss_cos"}


def _forward_kl_by_autograd(student_logits, target_logprobs, t):
    """``T²·Σ P (log P − log softmax(z/T))`` written from the definition, differentiated by autograd."""
    log_q = torch.log_softmax(student_logits.double() / t, dim=-1)
    return t * t * (target_logprobs.double().exp() * (target_logprobs.double() - log_q)).sum(-1)


@pytest.mark.parametrize("t", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_kl_closed_form_gradient_matches_autograd(t, dtype):
    """The KD term's own backward, T·(Q − P) scaled by each position's incoming gradient, equals autograd through
    the definition, for any per-position weights (a batch mean, a DP row loss), a second backward through the same
    graph (retain_graph), and logits in bf16 (gradient returned in the logits' dtype)."""
    from distill.distillation.losses import kd_terms

    g = torch.Generator().manual_seed(int(t * 10))
    z = (torch.randn(2, 5, 31, generator=g, dtype=torch.float64) * 3).to(dtype)
    # normalised in float64 (the closed form takes Σ P = 1; a float32 target sums to 1 within float32 rounding)
    target = torch.log_softmax(torch.randn(2, 5, 31, generator=g, dtype=torch.float64) * 3 / t, dim=-1)
    weights = torch.rand(2, 5, generator=g, dtype=torch.float64)

    ref_z = z.detach().double().requires_grad_()
    ref = _forward_kl_by_autograd(ref_z, target, t)
    (ref * weights).sum().backward()

    ours_z = z.detach().clone().requires_grad_()
    ours = kd_terms(ours_z, target, t)
    assert ours.shape == (2, 5)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=tol, atol=tol)
    (ours * weights.to(ours.dtype)).sum().backward(retain_graph=True)
    assert ours_z.grad.dtype == dtype
    gtol = 1e-12 if dtype == torch.float64 else (2e-2 if dtype == torch.bfloat16 else 1e-6)
    torch.testing.assert_close(ours_z.grad.double(), ref_z.grad, rtol=gtol, atol=gtol)
    first = ours_z.grad.clone()
    (ours * weights.to(ours.dtype)).sum().backward()  # the saved tensors are intact for a second backward
    torch.testing.assert_close(ours_z.grad, 2 * first)


def test_compiled_forward_kl_gives_the_eager_value_and_gradient():
    """``compile_loss``: the KD term and its gradient through ``torch.compile`` equal the definition's (one compile:
    float32, T = 2, per-position weights, a second backward)."""
    from distill.distillation import losses

    losses._compiled_kl.clear()
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 5, 31, generator=g) * 3
    target = torch.log_softmax(torch.randn(2, 5, 31, generator=g, dtype=torch.float64) * 1.5, dim=-1)
    weights = torch.rand(2, 5, generator=g, dtype=torch.float64)
    ref_z = z.double().requires_grad_()
    ref = _forward_kl_by_autograd(ref_z, target, 2.0)
    (ref * weights).sum().backward()
    ours_z = z.clone().requires_grad_()
    ours = losses.kd_terms(ours_z, target.float(), 2.0, compile_loss=True)
    assert losses._compiled_kl["fn"] is not losses._kl_and_gradient  # it did compile (no fallback)
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    (ours * weights.float()).sum().backward(retain_graph=True)
    torch.testing.assert_close(ours_z.grad.double(), ref_z.grad, rtol=1e-5, atol=1e-6)
    first = ours_z.grad.clone()
    (ours * weights.float()).sum().backward()
    torch.testing.assert_close(ours_z.grad, 2 * first)


def test_compile_loss_falls_back_to_eager_with_one_warning(monkeypatch):
    """Where compilation fails the loss warns once and runs eager, with the same numbers."""
    from distill.distillation import losses

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(losses, "_compiled_kl", {"fn": broken})
    z, target = torch.randn(4, 9), torch.log_softmax(torch.randn(4, 9), -1)
    with pytest.warns(RuntimeWarning, match=r"compile_loss: torch.compile failed \(RuntimeError: no C\+\+ compiler "
                                            r"found\); the KD loss runs eager"):
        first = losses.kd_terms(z, target, 2.0, compile_loss=True)
    assert losses._compiled_kl["fn"] is losses._kl_and_gradient
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = losses.kd_terms(z, target, 2.0, compile_loss=True)
    torch.testing.assert_close(first, losses.kd_terms(z, target, 2.0))
    torch.testing.assert_close(again, first)


def test_forward_kl_with_a_target_that_needs_gradient_takes_autograd():
    """A target that carries a gradient (not the teacher's) gets it through the generic divergence."""
    from distill.distillation.losses import kd_terms

    z = torch.randn(3, 11)
    target_logits = torch.randn(3, 11, requires_grad=True)
    kd_terms(z, torch.log_softmax(target_logits, -1), 1.0).sum().backward()
    assert target_logits.grad is not None and target_logits.grad.abs().sum() > 0


def _sparse_target(logits: torch.Tensor, k: int, t: float):
    """The top-k + tail target of ``logits`` at temperature ``t`` (tail ``-inf`` when k covers the vocabulary)."""
    from distill.distillation.losses import SparseTarget

    full = torch.log_softmax(logits.double() / t, dim=-1)
    top = full.topk(k, dim=-1)
    rest = 1 - top.values.exp().sum(-1)
    tail = torch.where(rest > 0, torch.log(rest.clamp_min(1e-300)), torch.tensor(float("-inf"), dtype=torch.float64))
    if k == logits.shape[-1]:
        tail = torch.full_like(tail, float("-inf"))
    return SparseTarget(top.indices, top.values, tail)


def _sparse_kl_by_autograd(z, target, t):
    """``T²·KL(P̂ ‖ Q̂)`` over the k + 1 buckets, from the definition in float64 (no floor), by autograd."""
    q = torch.softmax(z.double() / t, dim=-1)
    q_ids = q.gather(-1, target.ids)
    empty = torch.isneginf(target.tail)
    q_tail = torch.where(empty, 1.0, 1 - q_ids.sum(-1))  # (1 where unused: no 0 * log 0 in the gradient)
    kl = (target.logprobs.exp() * (target.logprobs - q_ids.log())).sum(-1)
    tail = torch.where(empty, 0.0, target.tail.exp() * (target.tail - q_tail.log()))
    return t * t * (kl + tail)


@pytest.mark.parametrize("t", [1.0, 2.0])
@pytest.mark.parametrize("k", [5, 40])  # a tail bucket; no tail (the ids are the whole vocabulary)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_forward_kl_closed_form_gradient_matches_autograd(t, k, dtype):
    """Against a teacher cache's top-k + tail target, the KD term's own backward equals autograd through the
    bucket KL written from the definition; a second backward through the same graph gives the same gradient."""
    from distill.distillation.losses import SparseTarget, kd_terms

    g = torch.Generator().manual_seed(k + int(t))
    target = _sparse_target(torch.randn(3, 4, 40, generator=g, dtype=torch.float64) * 2, k, t)
    target = SparseTarget(target.ids, target.logprobs.to(dtype), target.tail.to(dtype))
    z = (torch.randn(3, 4, 40, generator=g, dtype=torch.float64) * 2).to(dtype)
    weights = torch.rand(3, 4, generator=g, dtype=torch.float64)

    ref_z = z.detach().double().requires_grad_()
    ref = _sparse_kl_by_autograd(ref_z, SparseTarget(target.ids, target.logprobs.double(), target.tail.double()), t)
    (ref * weights).sum().backward()
    ours_z = z.detach().clone().requires_grad_()
    ours = kd_terms(ours_z, target, t)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=tol, atol=tol)
    (ours * weights.to(ours.dtype)).sum().backward(retain_graph=True)
    torch.testing.assert_close(ours_z.grad.double(), ref_z.grad, rtol=tol, atol=tol)
    first = ours_z.grad.clone()
    (ours * weights.to(ours.dtype)).sum().backward()
    torch.testing.assert_close(ours_z.grad, 2 * first)


def test_sparse_forward_kl_keeps_the_floor_of_the_student_tail():
    """Where the student's ids hold all but < 1e-6 of its mass, its tail is floored and carries no gradient: the
    closed form gives what autograd through :func:`sparse_buckets` gives, rows with and without a floored tail."""
    from distill.distillation.losses import SparseTarget, kd_terms, sparse_buckets
    from distill.divergences import divergence

    g = torch.Generator().manual_seed(3)
    target = _sparse_target(torch.randn(4, 30, generator=g, dtype=torch.float64) * 2, 4, 1.0)
    target = SparseTarget(target.ids, target.logprobs.float(), target.tail.float())
    z = torch.randn(4, 30, generator=g)
    z[:2].scatter_add_(-1, target.ids[:2], torch.full((2, 4), 30.0))  # rows 0, 1: the ids hold ~all the mass
    ref_z = z.clone().requires_grad_()
    log_p, log_q = sparse_buckets(ref_z, target, 1.0)
    ref = divergence("forward_kl")(log_p, log_q)
    ref.sum().backward()
    ours_z = z.clone().requires_grad_()
    ours = kd_terms(ours_z, target, 1.0)
    ours.sum().backward()
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_z.grad, ref_z.grad, rtol=1e-5, atol=1e-6)
