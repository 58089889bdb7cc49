"""The distillation loss of each row, as DP-SGD needs it.

DP-SGD clips the gradient of each record's *own* loss. The trainer's loss is a mean over all tokens of a
batch, whose per-row gradients depend on the other rows (through the token count); here each row's loss is
the mean over its own tokens only, and the batch objective is their sum. Same terms and weights as
:func:`distill.losses.distillation_loss`, which it equals for a batch of one row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def per_row_distillation_loss(
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
    """``[B]`` losses ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)``, each term averaged over the row's tokens,
    and the batch means of the terms (detached, for logging)."""
    if mask is None:
        mask = torch.ones(student_logits.shape[:2], dtype=torch.long, device=student_logits.device)
    total = student_logits.new_zeros(student_logits.shape[0], dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if alpha_kd > 0:
        student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)
        kl = (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(-1)
        kd = temperature**2 * _row_mean(kl, mask)
        total = total + alpha_kd * kd
        parts["loss_kd"] = kd.detach().mean()
    if alpha_lm > 0:
        logits = student_logits[:, :-1, :].float()
        targets = labels[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                             reduction="none").view(targets.shape)
        lm = _row_mean(ce, targets != -100)
        total = total + alpha_lm * lm
        parts["loss_lm"] = lm.detach().mean()
    if alpha_cos > 0:
        if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
            raise ValueError("alpha_cos needs equal hidden sizes of student and teacher: set alpha_cos to 0.")
        cos = 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
        cos = _row_mean(cos, mask)
        total = total + alpha_cos * cos
        parts["loss_cos"] = cos.detach().mean()
    return total, parts
