"""The KD loss menu (distill.divergences) against references written from the definitions, dense and sparse."""

import math
import os

import pytest
import torch

from distill.distillation.config import DistillationConfig
from distill.divergences import KD_LOSSES, divergence, forward_kl, jsd, reverse_kl
from distill.errors import ConfigError
from distill.distillation.losses import SparseTarget, distillation_loss, kd_loss, kd_terms, teacher_log_probs


# ---- references, one position at a time, in plain Python floats --------------------------------------------------
def _kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


def _mix(a, b, w):
    return [w * x + (1 - w) * y for x, y in zip(a, b)]


def reference(name, p, q, beta=0.5, alpha=0.1):
    """D(P ‖ Q) from the definitions (docs/teacher_cache.md, DESIGN "Distillation loss")."""
    if name == "forward_kl" or (name == "jsd" and beta == 0):
        return _kl(p, q)
    if name == "reverse_kl" or (name == "jsd" and beta == 1):
        return _kl(q, p)
    if name == "jsd":
        m = _mix(p, q, beta)
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    if name == "tvd":
        return 0.5 * sum(abs(x - y) for x, y in zip(p, q))
    if name == "skew_forward_kl":
        return _kl(p, _mix(p, q, alpha))
    if name == "skew_reverse_kl":
        return _kl(q, _mix(q, p, alpha))
    raise AssertionError(name)


def _dists(shape=(3, 4, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2,
            torch.randn(*shape, generator=g, dtype=torch.float64) * 2)


@pytest.mark.parametrize("name", KD_LOSSES)
@pytest.mark.parametrize("beta,alpha", [(0.5, 0.1), (0.2, 0.4), (0.0, 0.0), (1.0, 0.9)])
def test_each_divergence_matches_its_definition(name, beta, alpha):
    zp, zq = _dists()
    lp, lq = zp.log_softmax(-1), zq.log_softmax(-1)
    got = divergence(name, beta=beta, alpha=alpha)(lp, lq)
    want = torch.tensor([[reference(name, lp[b, t].exp().tolist(), lq[b, t].exp().tolist(), beta, alpha)
                          for t in range(lp.shape[1])] for b in range(lp.shape[0])], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert (got >= -1e-12).all()
    assert divergence(name, beta=beta, alpha=alpha)(lp, lp).abs().max() < 1e-12  # D(P ‖ P) = 0


def test_jsd_limits_follow_trl_gkd():
    zp, zq = _dists(seed=1)
    lp, lq = zp.log_softmax(-1), zq.log_softmax(-1)
    torch.testing.assert_close(jsd(lp, lq, 0.0), forward_kl(lp, lq))  # TRL's β = 0 special case
    torch.testing.assert_close(jsd(lp, lq, 1.0), reverse_kl(lp, lq))  # β = 1
    eps = 1e-7  # ... and they are the limits of the scaled divergence, which itself goes to 0
    torch.testing.assert_close(jsd(lp, lq, eps) / eps, forward_kl(lp, lq), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(jsd(lp, lq, 1 - eps) / eps, reverse_kl(lp, lq), rtol=1e-3, atol=1e-6)
    assert jsd(lp, lq, eps).max() < 1e-3 * forward_kl(lp, lq).max()


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_jsd_matches_trl_generalized_jsd_loss(beta):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.experimental.gkd import GKDTrainer
    except ImportError:
        from trl import GKDTrainer
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 5, 13, generator=g), torch.randn(2, 5, 13, generator=g)
    labels = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]])
    ours = kd_loss(s, teacher_log_probs(t, 1.0), labels != -100, 1.0, kd_loss="jsd", kd_beta=beta)
    theirs = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-7)


def test_default_is_forward_kl_and_temperature_squared():
    s, t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    lp = teacher_log_probs(t, 2.0)
    want = 4.0 * forward_kl(lp, torch.log_softmax(s / 2.0, -1))
    torch.testing.assert_close(kd_terms(s, lp, 2.0), want)
    torch.testing.assert_close(kd_terms(s, lp, 2.0, kd_loss="forward_kl"), want)


def _sparse(logprobs, k):
    values, ids = logprobs.topk(k, -1)
    rest = 1 - values.exp().sum(-1)
    tail = torch.where(rest > 0, rest.clamp_min(1e-30).log(), torch.full_like(rest, -math.inf))
    return SparseTarget(ids, values, tail if k < logprobs.shape[-1] else torch.full_like(rest, -math.inf))


@pytest.mark.parametrize("name", KD_LOSSES)
def test_sparse_target_at_k_equal_v_is_the_dense_loss_and_gradient(name):
    torch.manual_seed(3)
    s, t = torch.randn(2, 4, 9, requires_grad=True), torch.randn(2, 4, 9)
    lp = teacher_log_probs(t, 2.0)
    dense = kd_terms(s, lp, 2.0, kd_loss=name, kd_beta=0.3, kd_skew_alpha=0.2)
    (g_dense,) = torch.autograd.grad(dense.sum(), s)
    sparse = kd_terms(s, _sparse(lp, 9), 2.0, kd_loss=name, kd_beta=0.3, kd_skew_alpha=0.2)
    (g_sparse,) = torch.autograd.grad(sparse.sum(), s)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-4, atol=1e-6)
    # what a chunked loss does: the target at some flat positions, against those positions' logits
    pos = torch.tensor([6, 1, 3])
    chunk = kd_terms(s.detach().reshape(-1, 9)[pos], _sparse(lp, 9).at_positions(pos), 2.0, kd_loss=name,
                     kd_beta=0.3, kd_skew_alpha=0.2)
    torch.testing.assert_close(chunk, dense.detach().reshape(-1)[pos], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", KD_LOSSES)
def test_sparse_target_is_the_divergence_over_top_k_and_one_tail_bucket(name):
    torch.manual_seed(4)
    v, k, temp = 12, 4, 1.5
    s, t = torch.randn(2, 3, v, dtype=torch.float64), torch.randn(2, 3, v, dtype=torch.float64)
    lp = torch.log_softmax(t / temp, -1)
    target = _sparse(lp, k)
    got = kd_terms(s, target, temp, kd_loss=name, kd_beta=0.4, kd_skew_alpha=0.3)
    q = torch.softmax(s / temp, -1)
    for b in range(2):
        for pos in range(3):
            ids = target.ids[b, pos].tolist()
            p_hat = [lp[b, pos, i].exp().item() for i in ids]
            q_hat = [q[b, pos, i].item() for i in ids]
            p_hat.append(1 - sum(p_hat))
            q_hat.append(1 - sum(q_hat))
            want = temp**2 * reference(name, p_hat, q_hat, 0.4, 0.3)
            assert got[b, pos].item() == pytest.approx(want, rel=2e-5, abs=1e-8)  # the student side runs in float32


def test_sparse_student_tail_is_stable_when_the_top_k_hold_almost_all_mass():
    v, k = 50, 5
    s = torch.full((1, 1, v), -30.0)
    s[0, 0, :k] = 10.0  # the student's tail is ~e^-40: 1 - Σ would cancel to 0 in float32
    s.requires_grad_(True)
    lp = torch.log_softmax(torch.randn(1, 1, v), -1)
    out = kd_terms(s, _sparse(lp, k), 1.0, kd_loss="reverse_kl")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", ["reverse_kl", "jsd", "tvd"])
def test_per_row_losses_use_the_menu(name):
    torch.manual_seed(5)
    s, t = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    labels = torch.randint(0, 8, (3, 4))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    lp = teacher_log_probs(t, 2.0)
    kw = dict(temperature=2.0, alpha_kd=1.0, alpha_lm=0.5, kd_loss=name, kd_beta=0.3)
    rows, _ = distillation_loss(s, lp, labels, mask, per_row=True, **kw)
    for r in range(3):  # each row's loss is that row alone, averaged over its own tokens
        one, _ = distillation_loss(s[r:r + 1], lp[r:r + 1], labels[r:r + 1], mask[r:r + 1], **kw)
        assert rows[r].item() == pytest.approx(one.item(), rel=1e-6)
    fwd, _ = distillation_loss(s, lp, labels, mask, per_row=True, **{**kw, "kd_loss": "forward_kl"})
    assert not torch.allclose(rows, fwd)


def test_config_validates_the_menu(tmp_path):
    with pytest.raises(ConfigError, match="kd_loss must be one of"):
        DistillationConfig(output_dir=str(tmp_path), kd_loss="kl")
    with pytest.raises(ConfigError, match="kd_beta"):
        DistillationConfig(output_dir=str(tmp_path), kd_beta=1.5)
    with pytest.raises(ConfigError, match="kd_skew_alpha"):
        DistillationConfig(output_dir=str(tmp_path), kd_skew_alpha=1.0)
    with pytest.raises(ConfigError, match="alpha_cos must be 0"):
        DistillationConfig(output_dir=str(tmp_path), teacher_cache="c", alpha_cos=1.0)
    cfg = DistillationConfig(output_dir=str(tmp_path), kd_loss="jsd", kd_beta=0.9)
    assert cfg.kd_kwargs() == {"kd_loss": "jsd", "kd_beta": 0.9, "kd_skew_alpha": 0.1, "compile_loss": False}
