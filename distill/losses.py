"""Pure distillation loss functions.

All functions take per-position tensors shaped ``[B, T, ...]`` and a ``mask`` of shape ``[B, T]``
(1 where the position counts, i.e. a real, non-padding token) and return the mean over counted
positions. They never look at the models, so they can be tested on hand-made tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _row_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B]``: each row's mean over its own counted positions."""
    if mask is None:
        return values.mean(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def _soften(logits: torch.Tensor, temperature: float, inplace: bool = False) -> torch.Tensor:
    """``logits / T`` in float32; no pass over the logits at T = 1, and in place when the caller allows it."""
    out = logits.float()
    if temperature == 1.0:
        return out
    if inplace or out is not logits:  # a fresh float32 copy may be divided in place too
        return out.div_(temperature)
    return out / temperature


def teacher_log_probs(teacher_logits: torch.Tensor, temperature: float, inplace: bool = False) -> torch.Tensor:
    """Temperature-softened teacher log-probabilities ``log softmax(z_T / T)`` in float32.

    ``inplace=True`` lets the division by T overwrite ``teacher_logits`` (for logits nobody else reads).
    """
    return F.log_softmax(_soften(teacher_logits, temperature, inplace), dim=-1)


def kd_terms(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[B, T]``: ``T^2 * KL(p_T || p_S)`` at each position."""
    student_logprobs = F.log_softmax(_soften(student_logits, temperature), dim=-1)
    return temperature**2 * (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(-1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """``T^2 * KL(p_T || p_S)`` per position, averaged over ``mask``.

    ``teacher_logprobs`` are already temperature-softened (see :func:`teacher_log_probs`); keeping
    them as an input lets the counterfactual perturbation change the teacher distribution first.
    """
    return _masked_mean(kd_terms(student_logits, teacher_logprobs, temperature), mask)


def lm_terms(student_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T-1]`` next-token cross-entropies (position t predicts ``labels[t + 1]``) and where they count."""
    logits = student_logits[:, :-1, :].float()
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                         reduction="none").view(targets.shape)
    return ce, targets != -100


def lm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[t + 1]``; label -100 is ignored."""
    return _masked_mean(*lm_terms(student_logits, labels))


def cosine_terms(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: ``1 - cos(h_S, h_T)`` at each position (hidden widths must match)."""
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"alpha_cos needs equal hidden sizes, got student {student_hidden.shape[-1]} and teacher "
            f"{teacher_hidden.shape[-1]}: set alpha_cos to 0 or use a student of the teacher's width."
        )
    return 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """``1 - cos(h_S, h_T)`` per position, averaged over ``mask`` (hidden widths must match)."""
    return _masked_mean(cosine_terms(student_hidden, teacher_hidden), mask)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor | None,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    temperature: float,
    alpha_kd: float,
    alpha_lm: float,
    alpha_cos: float = 0.0,
    student_hidden: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    per_row: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The combined loss ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)`` and its components (detached).

    By default each term is the mean over all counted positions of the batch. ``per_row=True`` gives a ``[B]``
    loss instead, each term averaged over the row's own positions: what DP-SGD clips, since a row's gradient
    must not depend on the other rows (through a batch-wide token count). The components are then batch means
    of the row values. For a batch of one row both are the same.
    """
    reduce = _row_mean if per_row else _masked_mean
    total = student_logits.new_zeros(student_logits.shape[0] if per_row else (), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if alpha_kd > 0:
        kd = reduce(kd_terms(student_logits, teacher_logprobs, temperature), mask)
        total = total + alpha_kd * kd
        parts["loss_kd"] = kd.detach().mean()
    if alpha_lm > 0:
        lm = reduce(*lm_terms(student_logits, labels))
        total = total + alpha_lm * lm
        parts["loss_lm"] = lm.detach().mean()
    if alpha_cos > 0:
        cos = reduce(cosine_terms(student_hidden, teacher_hidden), mask)
        total = total + alpha_cos * cos
        parts["loss_cos"] = cos.detach().mean()
    return total, parts
