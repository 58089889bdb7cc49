"""The distillation loss computed through the output layers in chunks of positions (no ``[B, T, V]`` tensor).

The student's and the teacher's final hidden states ``h_S`` ``[B, T, H_S]`` and ``h_T`` ``[B, T, H_T]`` go in,
with both output layers (``z = W h + b``). For a chunk of ``n`` positions the loss of
:func:`distill.distillation.losses.distillation_loss` is computed in full:

* the teacher's target ``P`` at the chunk's positions from the teacher side
  (:meth:`distill.distillation.teacher_side.TeacherSide.targets`, any kind): with a split teacher
  ``log softmax(z_T / T)`` from its hidden states, perturbed under counterfactual role reversal with the teacher's
  hidden states on x̃ at the chunk's positions (``P̃`` = ``R(p_T(·|x̃))``; positions of x̃ that share x's prefix,
  and rows without a gendered token, use ``R(P)``); from a teacher cache the stored sparse target;
* per position ``ℓ_t = w_kd,t · D(P_t ‖ p_S,t) + w_ce,t · CE_t`` with the student's logits of the chunk, ``D``
  from :func:`distill.distillation.losses.kd_terms` (``T²·KL`` by default; its keyword arguments are passed through);
* ``w`` = :func:`distill.distillation.losses.loss_weights` folds in ``α`` and the mean over counted positions:
  ``α / #counted`` of the batch, or of the row when the loss is per row (DP-SGD), and 0 where the position does
  not count (such positions are skipped).

``Σ_t ℓ_t`` (or ``Σ_{t ∈ row} ℓ_t`` for each row) is ``α_kd·T²·D + α_lm·CE``, the same sum the unchunked loss
computes; :func:`distill.distillation.losses.combine_losses` — the α-combination of both losses — adds
``α_cos·(1−cos)`` and averages the components.

Each ``ℓ_t`` depends only on ``h_S,t`` and the output layer, so the chunk's gradients are taken while its
``[n, V]`` tensors exist (one forward and backward of the chunk inside this function's forward, as Liger's fused
linear losses do) and only ``∂L/∂h_S`` ``[B, T, H]`` and ``∂L/∂W`` ``[V, H]`` are kept. Backward scales them by
the incoming gradient (a scalar, or one factor per row: ``∂(Σ_r g_r L_r)/∂h_t = g_{r(t)} ∂ℓ_t/∂h_t``). When the
loss is per row *and* the output layer trains, ``Σ_r g_r ∂L_r/∂W`` cannot be formed ahead; then backward
recomputes each chunk with the weights ``g_{r(t)} w_t`` instead (as does a second backward through the same graph,
``retain_graph``: the gradients computed ahead are handed over, not copied). Peak memory is a few ``[n, V]``
tensors.

**Which path** (``loss_chunk_size: auto``, :func:`prefers_plain_loss`). On a GPU, the fused loss: on an H200 at
the recipe's 8 x 1024 in bf16 it took 0.89x the plain loss's step time and 0.47x its peak memory. On a CPU, where
the whole batch's vocabulary-wide tensors fit, the plain loss on full logits is faster (loss alone with the
recipe's terms: plain 0.72x the fused loss's time at 8 x 64, 0.70x at 2 x 512 with GPT-2's width and vocabulary —
one matmul per output layer instead of a loop of chunks and a recomputation); it holds about
:data:`PLAIN_LOSS_COPIES` float32 copies of ``[B, T, V]`` at its peak (measured 7.2), against about 2-4 for the
fused loss. So on a CPU ``auto`` takes the plain loss when ``PLAIN_LOSS_COPIES · B·T·V · 4`` bytes are at most
:data:`PLAIN_LOSS_SHARE` of ``MemAvailable`` (this process's share of it:
:func:`distill.runtime.available_memory`) (:func:`plain_loss_fits`), and the fused loss otherwise: GPT-2's
vocabulary at 2 x 512 (1.6 GB) takes the plain loss on a machine with more than 6.4 GB free, 8 x 1024 (13 GB) the
fused one unless 53 GB are free (per process). Figures and commands: docs/performance.md.

Own code because the fused kernels that exist (Liger's fused linear JSD / cross-entropy) are GPU kernels for
one divergence, without a temperature-softened counterfactual target or per-row (DP) reductions.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import available_memory
from .aligned_logits import aligned_linear
from .losses import combine_losses, cosine_terms, kd_terms, loss_weights
from .teacher_side import TeacherSide

#: ``[n, V]`` float32 bytes a chunk may hold per tensor when ``loss_chunk_size`` is ``auto``
AUTO_CHUNK_BYTES = {"cpu": 32 * 2**20, "cuda": 256 * 2**20}


#: float32 ``[B, T, V]`` copies the plain loss holds at its peak (measured 7.2 with the recipe's terms)
PLAIN_LOSS_COPIES = 8
#: the share of the available memory the plain loss may take under ``loss_chunk_size: auto``
PLAIN_LOSS_SHARE = 0.25


def plain_loss_fits(positions: int, vocab_size: int, available: int | None = None) -> bool:
    """Whether the plain loss's tensors fit for a batch of ``positions`` (``B·T``) positions:
    :data:`PLAIN_LOSS_COPIES` float32 ``[B·T, V]`` tensors within :data:`PLAIN_LOSS_SHARE` of ``available``
    bytes (default :func:`available_memory`; unknown: 4 GiB)."""
    if available is None:
        available = available_memory()
    if available is None:
        available = 4 * 2**30
    return PLAIN_LOSS_COPIES * positions * vocab_size * 4 <= PLAIN_LOSS_SHARE * available


def prefers_plain_loss(positions: int, vocab_size: int, device: torch.device | str = "cpu",
                       available: int | None = None) -> bool:
    """Whether ``loss_chunk_size: auto`` takes the plain loss for a batch of ``positions`` (``B·T``) positions:
    on a CPU where :func:`plain_loss_fits`, never on an accelerator (measured on CUDA: the fused loss is faster and
    leaner there; see the module docstring)."""
    return torch.device(device).type == "cpu" and plain_loss_fits(positions, vocab_size, available)


def auto_chunk_size(vocab_size: int, device: torch.device | str = "cpu") -> int:
    """Positions per chunk: a ``[n, V]`` float32 tensor within :data:`AUTO_CHUNK_BYTES` (at least 16)."""
    budget = AUTO_CHUNK_BYTES.get(torch.device(device).type, AUTO_CHUNK_BYTES["cuda"])
    return max(16, budget // (4 * vocab_size))


@dataclass
class _Plan:
    """Everything of one loss call that is not a differentiable input."""

    positions: torch.Tensor  # [N] flat positions that count for KD or CE
    rows: torch.Tensor  # [N] their row
    next_labels: torch.Tensor | None  # [N] the token each position predicts (-100: none)
    w_kd: torch.Tensor | None  # [N] weight of the KD term
    w_ce: torch.Tensor | None  # [N] weight of the CE term
    teacher: TeacherSide | None
    temperature: float
    kd_kwargs: dict
    batch_size: int
    per_row: bool
    chunk_size: int


def _chunk_loss(plan: _Plan, sl: slice, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                row_scale: torch.Tensor | None = None):
    """``(Σ_t ℓ_t, kd_t, ce_t)`` of the chunk ``sl`` (``ℓ_t`` scaled by ``row_scale`` of its row if given)."""
    logits = aligned_linear(hidden, weight, bias)
    total = logits.new_zeros((), dtype=torch.float32)
    kd = ce = None
    if plan.w_kd is not None:
        targets = plan.teacher.targets(plan.positions[sl])
        kd = kd_terms(logits, targets, plan.temperature, **plan.kd_kwargs)
        del targets
        w = plan.w_kd[sl] if row_scale is None else plan.w_kd[sl] * row_scale
        total = total + (kd * w).sum()
    if plan.w_ce is not None:
        ce = F.cross_entropy(logits.float(), plan.next_labels[sl], ignore_index=-100, reduction="none")
        w = plan.w_ce[sl] if row_scale is None else plan.w_ce[sl] * row_scale
        total = total + (ce * w).sum()
    return total, kd, ce


def _grads(total: torch.Tensor, inputs: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    wanted = [x for x in inputs if x is not None and x.requires_grad]
    got = iter(torch.autograd.grad(total, wanted)) if wanted else iter(())
    return [next(got) if x is not None and x.requires_grad else None for x in inputs]


class _FusedOutputLoss(torch.autograd.Function):
    """``(loss, kd_t, ce_t)`` from the student's hidden states at ``plan.positions`` and its output layer."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, plan: _Plan):
        needs = ctx.needs_input_grad[:3]
        ahead = any(needs) and not (plan.per_row and (needs[1] or needs[2]))
        grads = [torch.zeros_like(x, dtype=torch.float32) if need and x is not None else None
                 for x, need in zip((hidden, weight, bias), needs)] if ahead else [None] * 3
        n = hidden.shape[0]
        contrib = hidden.new_zeros(n, dtype=torch.float32)
        kd_all = hidden.new_zeros(n, dtype=torch.float32) if plan.w_kd is not None else None
        ce_all = hidden.new_zeros(n, dtype=torch.float32) if plan.w_ce is not None else None
        for start in range(0, n, plan.chunk_size):
            sl = slice(start, min(n, start + plan.chunk_size))
            with torch.enable_grad() if ahead else nullcontext():
                h = hidden[sl].detach().requires_grad_(needs[0] and ahead)
                w = weight.detach().requires_grad_(needs[1] and ahead)
                b = bias.detach().requires_grad_(needs[2] and ahead) if bias is not None else None
                total, kd, ce = _chunk_loss(plan, sl, h, w, b)
                if ahead:
                    for acc, g in zip(grads, _grads(total, [h, w, b])):
                        if g is not None:
                            (acc[sl] if acc is grads[0] else acc).add_(g)
            if kd is not None:
                kd_all[sl] = kd.detach()
            if ce is not None:
                ce_all[sl] = ce.detach()
            contrib[sl] = _position_losses(plan, sl, kd, ce)
        ctx.plan, ctx.ahead = plan, ahead
        device = hidden.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(hidden, weight, bias)
        ctx.ahead_grads = grads if ahead else None
        if plan.per_row:
            loss = contrib.new_zeros(plan.batch_size).index_add_(0, plan.rows, contrib)
        else:
            loss = contrib.sum()
        extras = [x if x is not None else contrib.new_zeros(0) for x in (kd_all, ce_all)]
        ctx.mark_non_differentiable(*extras)
        return loss, *extras

    @staticmethod
    def backward(ctx, grad_loss, _grad_kd, _grad_ce):
        plan: _Plan = ctx.plan
        hidden, weight, bias = ctx.saved_tensors
        grads = ctx.ahead_grads
        if grads is not None and plan.per_row:  # ∂L_r/∂h_t scaled by its row's g_r (no output-layer gradient)
            return (grads[0] * grad_loss.index_select(0, plan.rows)[:, None]).to(hidden.dtype), None, None, None
        if grads is not None:  # scaled in place and handed over: a second backward (retain_graph) recomputes
            ctx.ahead_grads = None
            return (*(None if g is None else g.mul_(grad_loss).to(x.dtype)
                      for g, x in zip(grads, (hidden, weight, bias))), None)
        row_scale = grad_loss.expand(plan.batch_size) if grad_loss.dim() == 0 else grad_loss
        row_scale = row_scale.index_select(0, plan.rows)
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return _recompute_grads(ctx, plan, row_scale, hidden, weight, bias)


def _recompute_grads(ctx, plan: _Plan, row_scale: torch.Tensor, hidden, weight, bias):
    needs = ctx.needs_input_grad[:3]
    out = [torch.zeros_like(x, dtype=torch.float32) if need and x is not None else None
           for x, need in zip((hidden, weight, bias), needs)]
    for start in range(0, hidden.shape[0], plan.chunk_size):
        sl = slice(start, min(hidden.shape[0], start + plan.chunk_size))
        with torch.enable_grad():
            h = hidden[sl].detach().requires_grad_(needs[0])
            w = weight.detach().requires_grad_(needs[1])
            b = bias.detach().requires_grad_(needs[2]) if bias is not None else None
            total, _, _ = _chunk_loss(plan, sl, h, w, b, row_scale=row_scale[sl])
            for acc, g in zip(out, _grads(total, [h, w, b])):
                if g is not None:
                    (acc[sl] if acc is out[0] else acc).add_(g)
    return (*(None if g is None else g.to(x.dtype) for g, x in zip(out, (hidden, weight, bias))), None)


def _position_losses(plan: _Plan, sl: slice, kd, ce) -> torch.Tensor:
    out = 0.0
    if kd is not None:
        out = out + kd.detach() * plan.w_kd[sl]
    if ce is not None:
        out = out + ce.detach() * plan.w_ce[sl]
    return out


def fused_distillation_loss(
    student_hidden: torch.Tensor,
    student_head: nn.Module,
    teacher: TeacherSide | None,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    temperature: float,
    alpha_kd: float,
    alpha_lm: float,
    alpha_cos: float = 0.0,
    teacher_hidden: torch.Tensor | None = None,
    per_row: bool = False,
    chunk_size: int | None = None,
    **kd_kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`distill.distillation.losses.distillation_loss` from the final hidden states, through the output layers
    in chunks.

    ``student_hidden`` ``[B, T, H]`` and ``student_head`` give the student's logits ``student_head(student_hidden)``;
    ``teacher`` (needed when ``alpha_kd > 0``; any :class:`~distill.distillation.teacher_side.TeacherSide`) gives
    the teacher's targets. ``teacher_hidden`` ``[B, T, H]`` is the teacher's last hidden state for the ``alpha_cos``
    term (no vocabulary-wide work). ``chunk_size``: positions per chunk (default: :func:`auto_chunk_size`). Extra
    keyword arguments go to :func:`distill.distillation.losses.kd_terms`. Returns the same ``(loss, parts)`` as
    :func:`~distill.distillation.losses.distillation_loss`, including with ``per_row``: both go through
    :func:`~distill.distillation.losses.combine_losses`.
    """
    batch, length = student_hidden.shape[:2]
    weight, bias = student_head.weight, getattr(student_head, "bias", None)
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.bool, device=student_hidden.device)
    mask = mask.bool()
    next_labels = torch.full_like(labels, -100)
    next_labels[:, :-1] = labels[:, 1:]
    ce_mask = next_labels != -100
    counts = torch.zeros_like(mask)
    w_kd = w_ce = None
    if alpha_kd > 0:
        if teacher is None:
            raise ValueError("alpha_kd > 0 needs the teacher's side of the loss.")
        w_kd = loss_weights(mask, alpha_kd, per_row)
        counts |= mask
    if alpha_lm > 0:
        w_ce = loss_weights(ce_mask, alpha_lm, per_row)
        counts |= ce_mask
    positions = counts.flatten().nonzero().squeeze(-1)
    rows = torch.div(positions, length, rounding_mode="floor")
    plan = _Plan(positions=positions, rows=rows, next_labels=next_labels.flatten().index_select(0, positions),
                 w_kd=None if w_kd is None else w_kd.flatten().index_select(0, positions),
                 w_ce=None if w_ce is None else w_ce.flatten().index_select(0, positions), teacher=teacher,
                 temperature=temperature, kd_kwargs=kd_kwargs, batch_size=batch, per_row=per_row,
                 chunk_size=chunk_size or auto_chunk_size(weight.shape[0], weight.device))
    hidden = student_hidden.reshape(batch * length, -1).index_select(0, positions)
    loss, kd, ce = _FusedOutputLoss.apply(hidden, weight, bias, plan)
    terms = {}
    if alpha_kd > 0:
        terms["loss_kd"] = (_scatter(kd, positions, batch, length), mask)
    if alpha_lm > 0:
        terms["loss_lm"] = (_scatter(ce, positions, batch, length), ce_mask)
    if alpha_cos > 0:
        terms["loss_cos"] = (cosine_terms(student_hidden, teacher_hidden), mask)
    return combine_losses(terms, alpha_kd=alpha_kd, alpha_lm=alpha_lm, alpha_cos=alpha_cos, per_row=per_row,
                          presummed=(loss, ("loss_kd", "loss_lm")))


def _scatter(values: torch.Tensor, positions: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    return values.new_zeros(batch * length).index_copy_(0, positions, values).view(batch, length)
