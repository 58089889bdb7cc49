"""Divergences between the KD target P and the student Q, per position, from log-probabilities.

Every function takes ``target_logprobs = log P`` and ``student_logprobs = log Q`` of shape ``[..., N]`` (float,
normalised over the last dimension) and returns ``[...]``: one value a position. They are sums over the N
entries of a per-entry function f(P_i, Q_i) with f(x, x) = 0 (*separable*), which is what lets the sparse
teacher-cache target (:class:`distill.distillation.losses.SparseTarget`) use them unchanged on its k + 1 buckets.

With ``M_w = w·A + (1 − w)·B`` computed in log space (``logaddexp``):

- ``forward_kl``       KL(P ‖ Q) = Σ P (log P − log Q)                 (the classic KD loss; the default)
- ``reverse_kl``       KL(Q ‖ P) = Σ Q (log Q − log P)                 (mode seeking)
- ``jsd(β)``           β·KL(P ‖ M) + (1 − β)·KL(Q ‖ M),  M = β·P + (1 − β)·Q   (TRL GKD's generalized JSD)
                       β = 0 is forward KL and β = 1 reverse KL, special-cased exactly as TRL's
                       ``GKDTrainer.generalized_jsd_loss`` does. These are the limits of the *scaled* divergence
                       (JSD_β / β → KL(P ‖ Q) as β → 0, JSD_β / (1 − β) → KL(Q ‖ P) as β → 1); JSD_β itself goes
                       to 0 at both ends, so the values jump there, as in TRL.
- ``tvd``              ½ Σ |P − Q|
- ``skew_forward_kl``  KL(P ‖ α·P + (1 − α)·Q)                          (DistiLLM's skew KL, α ∈ [0, 1))
- ``skew_reverse_kl``  KL(Q ‖ α·Q + (1 − α)·P)

Own code rather than a library: TRL implements only the generalized JSD (inside its trainer, on logits and
with its own reduction), and none of these libraries takes log-probabilities of an already perturbed target.
Inputs must be finite where the other side has mass (a log-softmax always is).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

#: ``kd_loss`` names, in the order the docs list them.
KD_LOSSES = ("forward_kl", "reverse_kl", "jsd", "tvd", "skew_forward_kl", "skew_reverse_kl")


def _kl(a_log: torch.Tensor, b_log: torch.Tensor) -> torch.Tensor:
    """KL(A ‖ B) = Σ A (log A − log B) over the last dimension."""
    return (a_log.exp() * (a_log - b_log)).sum(-1)


def _log_mix(a_log: torch.Tensor, b_log: torch.Tensor, w: float) -> torch.Tensor:
    """log(w·A + (1 − w)·B), stable in log space; w = 0 gives log B and w = 1 gives log A exactly."""
    if w == 0.0:
        return b_log
    if w == 1.0:
        return a_log
    return torch.logaddexp(a_log + math.log(w), b_log + math.log1p(-w))


def forward_kl(target_logprobs: torch.Tensor, student_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q)."""
    return _kl(target_logprobs, student_logprobs)


def reverse_kl(target_logprobs: torch.Tensor, student_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(Q ‖ P)."""
    return _kl(student_logprobs, target_logprobs)


def jsd(target_logprobs: torch.Tensor, student_logprobs: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """TRL GKD's generalized JSD: β·KL(P ‖ M) + (1 − β)·KL(Q ‖ M), M = β·P + (1 − β)·Q; β = 0 → KL(P ‖ Q),
    β = 1 → KL(Q ‖ P)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd needs 0 <= beta <= 1, got {beta}.")
    if beta == 0.0:
        return forward_kl(target_logprobs, student_logprobs)
    if beta == 1.0:
        return reverse_kl(target_logprobs, student_logprobs)
    mix = _log_mix(target_logprobs, student_logprobs, beta)
    return beta * _kl(target_logprobs, mix) + (1.0 - beta) * _kl(student_logprobs, mix)


def tvd(target_logprobs: torch.Tensor, student_logprobs: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ |P − Q|."""
    return 0.5 * (target_logprobs.exp() - student_logprobs.exp()).abs().sum(-1)


def skew_forward_kl(target_logprobs: torch.Tensor, student_logprobs: torch.Tensor, alpha: float = 0.1
                    ) -> torch.Tensor:
    """KL(P ‖ α·P + (1 − α)·Q); α = 0 is forward KL."""
    _check_alpha(alpha)
    return _kl(target_logprobs, _log_mix(target_logprobs, student_logprobs, alpha))


def skew_reverse_kl(target_logprobs: torch.Tensor, student_logprobs: torch.Tensor, alpha: float = 0.1
                    ) -> torch.Tensor:
    """KL(Q ‖ α·Q + (1 − α)·P); α = 0 is reverse KL."""
    _check_alpha(alpha)
    return _kl(student_logprobs, _log_mix(student_logprobs, target_logprobs, alpha))


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"the skew KL needs 0 <= alpha < 1, got {alpha} (alpha = 1 compares a distribution with "
                         "itself).")


def divergence(name: str, *, beta: float = 0.5, alpha: float = 0.1
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The divergence ``kd_loss = name`` as a function of ``(target_logprobs, student_logprobs)``."""
    if name == "jsd":
        return lambda p, q: jsd(p, q, beta)
    if name == "skew_forward_kl":
        return lambda p, q: skew_forward_kl(p, q, alpha)
    if name == "skew_reverse_kl":
        return lambda p, q: skew_reverse_kl(p, q, alpha)
    table = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "tvd": tvd}
    if name not in table:
        raise ValueError(f"kd_loss must be one of {', '.join(KD_LOSSES)}; got {name!r}.")
    return table[name]
