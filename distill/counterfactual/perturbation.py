"""Teacher-prediction perturbation (pure functions on log-probabilities).

With ``P = p_T(·|x)`` the teacher's (temperature-softened) prediction on the context x and ``x̃`` the
gender-swapped context, ``P̃ = R(p_T(·|x̃))`` is the teacher's prediction on x̃ with the gendered entries
swapped back: ``P̃[v] = p_T(R(v)|x̃)``. The perturbed target is

* ``none``: ``P``
* ``mean``: ``½(P + P̃)``
* ``max``: ``max(P, P̃)`` renormalised to sum to 1
* ``interpolate``: ``(1 − λ)P + λP̃``

All maths is done on log-probabilities with ``logaddexp``/``logsumexp`` (never ``log(exp(·))``), so tiny
probabilities stay exact and the result is a valid log-distribution over the last axis.
"""

from __future__ import annotations

import math

import torch

from ..config import PERTURBATION_MODES


def reverse_roles(logprobs: torch.Tensor, perm: torch.LongTensor) -> torch.Tensor:
    """``R`` on the vocabulary axis: ``out[..., v] = logprobs[..., perm[v]]``."""
    return logprobs.index_select(-1, perm)


def perturb_log_probs(logprobs: torch.Tensor, reversed_logprobs: torch.Tensor, mode: str,
                      lam: float = 0.5) -> torch.Tensor:
    """Perturbed teacher log-probabilities from ``log P`` and ``log P̃`` (same shape ``[..., V]``)."""
    if mode == "none":
        return logprobs
    if mode == "mean":
        return torch.logaddexp(logprobs, reversed_logprobs) - math.log(2.0)
    if mode == "max":
        top = torch.maximum(logprobs, reversed_logprobs)
        return top - torch.logsumexp(top, dim=-1, keepdim=True)
    if mode == "interpolate":
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"perturbation_lambda must be in [0, 1], got {lam}.")
        if lam == 0.0:
            return logprobs
        if lam == 1.0:
            return reversed_logprobs
        return torch.logaddexp(logprobs + math.log1p(-lam), reversed_logprobs + math.log(lam))
    raise ValueError(f"perturbation must be one of {', '.join(PERTURBATION_MODES)}; got {mode!r}.")


def counterfactual_targets(logprobs: torch.Tensor, cf_logprobs: torch.Tensor, perm: torch.LongTensor,
                           mode: str, lam: float = 0.5) -> torch.Tensor:
    """Perturbed targets from the teacher's log-probs on x and on x̃ (the latter not yet swapped back)."""
    if mode == "none":
        return logprobs
    return perturb_log_probs(logprobs, reverse_roles(cf_logprobs, perm), mode, lam)
