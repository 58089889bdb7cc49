"""The distillation loss of each row, as DP-SGD needs it.

DP-SGD clips the gradient of each record's *own* loss. The trainer's loss is a mean over all tokens of a
batch, whose per-row gradients depend on the other rows (through the token count); here each row's loss is
the mean over its own tokens only, and the batch objective is their sum. It is
:func:`distill.losses.distillation_loss` with ``per_row=True``: the same terms and weights, which it equals
for a batch of one row.
"""

from __future__ import annotations

import torch

from ..losses import distillation_loss


def per_row_distillation_loss(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor | None,
                              labels: torch.Tensor, mask: torch.Tensor | None, **weights
                              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``[B]`` losses ``α_kd·T²·KL + α_lm·CE + α_cos·(1−cos)``, each term averaged over the row's tokens,
    and the batch means of the terms (detached, for logging)."""
    return distillation_loss(student_logits, teacher_logprobs, labels, mask, per_row=True, **weights)
