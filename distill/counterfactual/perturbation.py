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

#: Teacher-prediction perturbation modes (`perturbation`): none, ½(P + P̃), max(P, P̃) renormalised, (1−λ)P + λP̃.
PERTURBATION_MODES = ("none", "mean", "max", "interpolate")


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


def perturb_swapped_rows(logprobs: torch.Tensor, cf_logprobs: torch.Tensor, rows: torch.LongTensor,
                         perm: torch.LongTensor, gendered: torch.LongTensor, mode: str, lam: float = 0.5,
                         *, inplace: bool = False) -> torch.Tensor:
    """:func:`counterfactual_targets` for a batch in which only ``rows`` have a swapped context.

    ``logprobs`` ``[B, T, V]`` is P; ``cf_logprobs`` ``[len(rows), T, V]`` the teacher on x̃ for ``rows``. For
    the other rows x̃ = x, so P̃ = R(P) differs from P only in the ``gendered`` columns (the tokens that R
    moves) and only those columns are computed; the swapped rows get the full computation. The result equals
    ``counterfactual_targets(P, S, perm, mode, lam)`` with ``S = P`` except ``S[rows] = cf_logprobs``.
    ``inplace=True`` overwrites ``logprobs`` and ``cf_logprobs`` (saves ``[B, T, V]`` buffers).
    """
    if mode == "none":
        return logprobs
    if inplace and mixes_in_place(mode, lam):  # whole rows are segments that start at position 0
        return perturb_swapped_segments(logprobs, list(cf_logprobs), rows.tolist(), [0] * rows.numel(), perm,
                                        gendered, mode, lam)
    return perturb_positions(logprobs if inplace else logprobs.clone(), cf_logprobs, rows, perm, gendered, mode, lam)


def perturb_positions(logprobs: torch.Tensor, cf_logprobs: torch.Tensor, rows: torch.LongTensor,
                      perm: torch.LongTensor, gendered: torch.LongTensor, mode: str, lam: float = 0.5
                      ) -> torch.Tensor:
    """:func:`perturb_swapped_rows` in place and vectorised over the first axis, for any mode.

    ``logprobs`` ``[N, ..., V]`` is P (e.g. ``[n, V]`` for ``n`` positions of a chunk), ``cf_logprobs``
    ``[len(rows), ..., V]`` the teacher on x̃ at ``rows``; elsewhere x̃'s outputs are P itself. Overwrites
    ``logprobs``.
    """
    if mode == "none":
        return logprobs
    if mode not in PERTURBATION_MODES:
        raise ValueError(f"perturbation must be one of {', '.join(PERTURBATION_MODES)}; got {mode!r}.")
    out = logprobs
    swapped = rows.numel() > 0
    partners = perm.index_select(0, gendered)
    p_g = logprobs.index_select(-1, gendered)  # P at the gendered columns
    src_g = logprobs.index_select(-1, partners)  # P̃ at the gendered columns: S at their partners
    if swapped:
        src_g.index_copy_(0, rows, cf_logprobs.index_select(-1, partners))
    if mode != "max":
        if swapped:  # outside the gendered columns P̃ = S, so perturb(P, S) there
            out.index_copy_(0, rows, perturb_log_probs(logprobs.index_select(0, rows), cf_logprobs, mode, lam))
        out.index_copy_(-1, gendered, perturb_log_probs(p_g, src_g, mode, lam))
        return out
    top_g = torch.maximum(p_g, src_g)
    # rows with x̃ = x: max(P, P̃) = P outside the gendered columns, so Z = 1 + Σ_g (max − P)
    log_z = torch.log1p((top_g.exp() - p_g.exp()).sum(-1, keepdim=True))
    if swapped:
        top_rows = torch.maximum(logprobs.index_select(0, rows), cf_logprobs)
        top_rows.index_copy_(-1, gendered, top_g.index_select(0, rows))
        log_z.index_copy_(0, rows, torch.logsumexp(top_rows, dim=-1, keepdim=True))
        out.index_copy_(0, rows, top_rows)
    out.index_copy_(-1, gendered, top_g)
    return out.sub_(log_z)


def mixes_in_place(mode: str, lam: float) -> bool:
    """Whether :func:`mix_segments_inplace` handles ``mode``: ``mean``, or ``interpolate`` with 0 < λ < 1."""
    return mode == "mean" or (mode == "interpolate" and 0.0 < lam < 1.0)


def mix_segments_inplace(out: torch.Tensor, segments: list[torch.Tensor], rows: list[int], starts: list[int],
                         mode: str, lam: float = 0.5) -> None:
    """``out[r, s:] = perturb(out[r, s:], segment)`` for each swapped row ``r`` from position ``s`` on, in place.

    ``segments[j]`` ``[T - starts[j], V]`` holds the teacher's log-probs on x̃ for row ``rows[j]`` from position
    ``starts[j]`` on (before that position x̃ and x share their prefix, so the teacher's outputs are P itself).
    Rows of ``out`` are contiguous slices: no gather of the swapped rows, no new ``[k, T, V]`` tensor, no
    scatter back. ``mean`` or ``interpolate`` with 0 < λ < 1 only; the segments are overwritten.
    """
    if not mixes_in_place(mode, lam):
        raise ValueError(f"mix_segments_inplace handles mean and interpolate with 0 < lambda < 1, not {mode} "
                         f"(lambda {lam}).")
    if mode == "mean":
        shift_p, shift_cf, shift_out = 0.0, 0.0, -math.log(2.0)
    else:
        shift_p, shift_cf, shift_out = math.log1p(-lam), math.log(lam), 0.0
    for seg, r, start in zip(segments, rows, starts):
        row = out[r, start:]
        if shift_p:
            row.add_(shift_p)
            seg.add_(shift_cf)
        torch.logaddexp(row, seg, out=row)
        if shift_out:
            row.add_(shift_out)


def perturb_swapped_segments(logprobs: torch.Tensor, segments: list[torch.Tensor], rows: list[int],
                             starts: list[int], perm: torch.LongTensor, gendered: torch.LongTensor, mode: str,
                             lam: float = 0.5) -> torch.Tensor:
    """:func:`perturb_swapped_rows` (in place) when the teacher ran on x̃ only from each swapped row's first
    swapped position: ``segments[j]`` ``[T - starts[j], V]`` are its log-probs there, for row ``rows[j]``.

    Exact, because x̃ and x share the prefix before ``starts[j]``, where the teacher's outputs on x̃ are P.
    ``mean`` and ``interpolate`` (0 < λ < 1); ``logprobs`` and the segments are overwritten.
    """
    partners = perm.index_select(0, gendered)
    p_g = logprobs.index_select(-1, gendered)  # P at the gendered columns
    src_g = logprobs.index_select(-1, partners)  # P̃ at the gendered columns: P at their partners ...
    for seg, r, start in zip(segments, rows, starts):  # ... except where x̃'s own outputs exist
        src_g[r, start:] = seg.index_select(-1, partners)
    mix_segments_inplace(logprobs, segments, rows, starts, mode, lam)
    logprobs.index_copy_(-1, gendered, perturb_log_probs(p_g, src_g, mode, lam))
    return logprobs
