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


def teacher_log_probs(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature-softened teacher log-probabilities ``log softmax(z_T / T)`` in float32."""
    return F.log_softmax(teacher_logits.float() / temperature, dim=-1)


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
    student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(-1)
    return temperature**2 * _masked_mean(kl, mask)


def lm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[t + 1]``; label -100 is ignored."""
    logits = student_logits[:, :-1, :].float()
    targets = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """``1 - cos(h_S, h_T)`` per position, averaged over ``mask`` (hidden widths must match)."""
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"alpha_cos needs equal hidden sizes, got student {student_hidden.shape[-1]} and teacher "
            f"{teacher_hidden.shape[-1]}: set alpha_cos to 0 or use a student of the teacher's width."
        )
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return _masked_mean(1.0 - cos, mask)


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The combined loss ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)`` and its components (detached)."""
    total = student_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if alpha_kd > 0:
        kd = kd_loss(student_logits, teacher_logprobs, mask, temperature)
        total = total + alpha_kd * kd
        parts["loss_kd"] = kd.detach()
    if alpha_lm > 0:
        lm = lm_loss(student_logits, labels)
        total = total + alpha_lm * lm
        parts["loss_lm"] = lm.detach()
    if alpha_cos > 0:
        cos = cosine_loss(student_hidden, teacher_hidden, mask)
        total = total + alpha_cos * cos
        parts["loss_cos"] = cos.detach()
    return total, parts
