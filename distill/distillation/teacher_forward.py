"""The teacher's perturbed targets for a batch: one forward pass over x and the rows of x̃ that differ.

x̃ is ``TokenSwapper.swap_tokens(input_ids)`` — R applied token by token, so x̃ has exactly the length of x
and position t of x̃ predicts the same next position as position t of x (no re-alignment is needed). Rows
whose x̃ equals x (no gendered token) are not run again: their prediction on x̃ *is* P, and only R is
applied to it, which changes only the columns of the gendered tokens (computed alone, so rows without a
gendered token cost O(#gendered tokens) per position, not O(V)). The rows that differ are concatenated to the
batch (``torch.cat``) so the teacher runs once.

A swapped row of x̃ shares its prefix with x up to its first swapped token, so there the teacher's outputs on
x̃ *are* P. When the teacher splits into a body and an output layer
(:func:`distill.distillation.teacher_head.split_output_layer`), the vocabulary-wide work on x̃ (output layer, log-softmax,
mixing) is done only from each row's first swapped position on, and the temperature divides the hidden states
instead of the logits (``mean`` and ``interpolate``; ``max`` renormalises whole rows and takes the full path).
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import teacher_log_probs
from .teacher_head import output_log_probs
from ..counterfactual.perturbation import mixes_in_place, perturb_swapped_rows, perturb_swapped_segments
from ..counterfactual.token_pairs import TokenSwapper


@torch.no_grad()
def role_reversed_teacher_targets(teacher, model_inputs: dict[str, torch.Tensor], swapper: TokenSwapper, *,
                                  temperature: float, mode: str, lam: float = 0.5, need_hidden: bool = False,
                                  split: tuple[nn.Module, nn.Module] | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Perturbed, temperature-softened teacher log-probs ``[B, T, V]``, the teacher's last hidden states on x
    (if asked) and the number of rows whose swapped context x̃ differs from x (run through the teacher).

    ``split``: the teacher's ``(body, output_layer)`` from :func:`~distill.distillation.teacher_head.split_output_layer`, to
    skip the shared prefix.
    """
    batch_size = model_inputs["input_ids"].size(0)
    batch, rows, differs = _with_swapped_rows(model_inputs, swapper)
    n_swapped = int(rows.numel())
    if split is not None and mixes_in_place(mode, lam):
        body, head = split
        out = body(**batch, output_hidden_states=need_hidden)
        states = out.last_hidden_state
        logprobs = output_log_probs(head, states[:batch_size], temperature)
        starts = differs.index_select(0, rows).int().argmax(-1).tolist()  # first swapped position of each row
        suffix = [states[batch_size + j, start:] for j, start in enumerate(starts)]
        segments = []
        if suffix:
            segments = list(output_log_probs(head, torch.cat(suffix), temperature)
                            .split([len(h) for h in suffix]))
        targets = perturb_swapped_segments(logprobs, segments, rows.tolist(), starts, swapper.perm,
                                           swapper.gendered_ids, mode, lam)
    else:
        out = teacher(**batch, output_hidden_states=need_hidden)
        logprobs_all = teacher_log_probs(out.logits, temperature, inplace=True)
        targets = perturb_swapped_rows(logprobs_all[:batch_size], logprobs_all[batch_size:], rows, swapper.perm,
                                       swapper.gendered_ids, mode, lam, inplace=True)
    hidden = out.hidden_states[-1][:batch_size] if need_hidden else None
    return targets, hidden, n_swapped


def _with_swapped_rows(model_inputs: dict[str, torch.Tensor], swapper: TokenSwapper):
    """``(batch, rows, differs)``: x with the rows of x̃ that differ from x appended, their indices, and where
    x̃ differs from x (``[B, T]``, real tokens only)."""
    ids = model_inputs["input_ids"]
    cf_ids = swapper.swap_tokens(ids)
    differs = cf_ids != ids
    if model_inputs.get("attention_mask") is not None:
        differs &= model_inputs["attention_mask"].bool()
    rows = differs.any(-1).nonzero().squeeze(-1)
    batch = model_inputs
    if rows.numel():
        batch = {k: torch.cat([v, (cf_ids if k == "input_ids" else v).index_select(0, rows)])
                 for k, v in model_inputs.items()}
    return batch, rows, differs


@torch.no_grad()
def role_reversed_teacher_states(body: nn.Module, model_inputs: dict[str, torch.Tensor], swapper: TokenSwapper, *,
                                 need_hidden: bool = False):
    """The teacher body's final hidden states on x and, where they differ, on x̃: what the fused loss
    (:class:`distill.distillation.fused_loss.Counterfactual`) perturbs its targets with, chunk by chunk.

    Returns ``(states, cf_states, slot, hidden, n_swapped)``: ``states`` ``[B, T, H]`` on x; ``cf_states``
    ``[M, H]`` on x̃ at each swapped row's positions from its first swapped token on; ``slot`` ``[B·T]`` the row
    of ``cf_states`` of each flat position ``b·T + t`` (-1 where x̃'s outputs are x's: rows without a gendered
    token, and the shared prefix); ``hidden`` the last entry of the body's hidden states on x (if asked).
    """
    batch_size, length = model_inputs["input_ids"].shape
    batch, rows, differs = _with_swapped_rows(model_inputs, swapper)
    out = body(**batch, output_hidden_states=need_hidden)
    states = out.last_hidden_state
    swapped = differs.index_select(0, rows)
    after = swapped.int().cumsum(-1) > 0  # [k, T]: from the row's first swapped position on
    source = after.flatten().nonzero().squeeze(-1)
    cf_states = states[batch_size:].reshape(-1, states.shape[-1]).index_select(0, source)
    targets = (rows[:, None] * length + torch.arange(length, device=rows.device)).flatten().index_select(0, source)
    slot = torch.full((batch_size * length,), -1, dtype=torch.long, device=states.device)
    slot.index_copy_(0, targets, torch.arange(source.numel(), device=states.device))
    hidden = out.hidden_states[-1][:batch_size] if need_hidden else None
    return states[:batch_size], cf_states, slot, hidden, int(rows.numel())
