"""The teacher's side of the distillation loss: one interface for the three kinds of teacher.

The KD term compares the student with a target ``P`` per position: the teacher's temperature-softened
prediction ``log softmax(z_T / T)``, perturbed under counterfactual role reversal (CRR). A :class:`TeacherSide`
holds that target for a batch ``[B, T]`` and gives it in the two ways the losses read it:

* :meth:`TeacherSide.log_probs` — the whole batch at once, ``[B, T, V]`` (or a sparse target): the plain loss
  (:func:`distill.distillation.losses.distillation_loss`);
* :meth:`TeacherSide.targets` — ``[n, V]`` at ``n`` flat positions ``b·T + t``: the fused loss
  (:mod:`distill.distillation.fused_loss`), chunk by chunk, so no ``[B, T, V]`` tensor need exist.

Three kinds:

* **dense** (:class:`DenseTeacherSide`): log-probabilities ``[B, T, V]`` computed from the teacher's logits (or
  from its split output layer, below), perturbation already applied.
* **split** (:class:`SplitTeacherSide`): the teacher as a body and an output layer ``z = W h + b``, when that
  reproduces its logits exactly (:func:`split_output_layer`, checked numerically). It keeps the final hidden
  states ``h`` ``[B, T, H]`` and applies the output layer only where a loss asks, and the temperature divides
  the ``H``-wide hidden states instead of the ``V``-wide logits (``W(h/T) = z/T`` for a bias-free float32 layer:
  :func:`output_log_probs`).
* **cached** (:class:`CachedTeacherSide`): the stored top-k + tail target of a teacher cache
  (:mod:`distill.distillation.teacher_cache`, :class:`~distill.distillation.losses.SparseTarget`), perturbation
  already applied; the teacher does not run.

:func:`run_teacher` runs the teacher for a batch and returns :class:`TeacherOutputs`: the side, the teacher's last
hidden states (for the ``α_cos`` term, if asked) and, under CRR, the number of rows whose swapped context differs.

**Counterfactual role reversal in one forward pass.** x̃ is ``TokenSwapper.swap_tokens(input_ids)`` — R applied
token by token, so x̃ has exactly the length of x and position t of x̃ predicts the same next position as position
t of x (no re-alignment is needed). Rows whose x̃ equals x (no gendered token) are not run again: their prediction
on x̃ *is* P, and only R is applied to it, which changes only the columns of the gendered tokens (computed alone,
so such rows cost O(#gendered tokens) per position, not O(V)). The rows that differ are concatenated to the batch
(``torch.cat``) so the teacher runs once. A swapped row of x̃ shares its prefix with x up to its first swapped
token, so there the teacher's outputs on x̃ *are* P: with a split teacher the vocabulary-wide work on x̃ (output
layer, log-softmax, mixing) is done only from each row's first swapped position on — for the whole batch
(:func:`role_reversed_teacher_targets`; ``mean`` and ``interpolate``, while ``max`` renormalises whole rows and
takes the full path) or position by position (:func:`role_reversed_teacher_states` and :class:`Counterfactual`:
``P̃ = R(p_T(·|x̃))`` at positions of x̃ past the shared prefix, ``R(P)`` elsewhere; every mode).

The student's output layer is split off the same way, through its own forward (``logits_to_keep`` empty, last
hidden state kept: :func:`hidden_output_layer`, :func:`no_logits`), so that the fused loss runs both output layers
chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..counterfactual.perturbation import (mixes_in_place, perturb_positions, perturb_swapped_rows,
                                           perturb_swapped_segments)
from ..counterfactual.token_pairs import TokenSwapper
from .aligned_logits import aligns, linear_log_softmax
from .losses import SparseTarget, teacher_log_probs


# ------------------------------------------------------------------------------------------------
# the teacher side of a batch: one interface, three kinds
# ------------------------------------------------------------------------------------------------
class TeacherSide:
    """The teacher's (perturbed, temperature-softened) target for a batch ``[B, T]``."""

    def log_probs(self) -> torch.Tensor | SparseTarget:
        """The whole batch's target: ``[B, T, V]`` log-probabilities, or a sparse target ``[B, T]``."""
        raise NotImplementedError

    def targets(self, positions: torch.Tensor) -> torch.Tensor | SparseTarget:
        """The target at the flat positions ``b·T + t``: ``[n, V]`` log-probabilities, or a sparse target ``[n]``."""
        raise NotImplementedError


@dataclass
class DenseTeacherSide(TeacherSide):
    """Log-probabilities ``[B, T, V]`` computed for the whole batch."""

    logprobs: torch.Tensor

    def log_probs(self) -> torch.Tensor:
        return self.logprobs

    def targets(self, positions: torch.Tensor) -> torch.Tensor:
        return self.logprobs.reshape(-1, self.logprobs.shape[-1]).index_select(0, positions)


@dataclass
class Counterfactual:
    """The teacher on x̃ where it differs from x: ``hidden`` ``[M, H]`` holds its final hidden states, and
    ``slot`` ``[B·T]`` maps each flat position ``b·T + t`` of x to its row of ``hidden`` (-1: none, use ``R(P)``)."""

    hidden: torch.Tensor
    slot: torch.Tensor
    perm: torch.Tensor
    gendered: torch.Tensor
    mode: str
    lam: float = 0.5


@dataclass
class SplitTeacherSide(TeacherSide):
    """The teacher's final hidden states on x ``[B, T, H]``, its output layer, the temperature and, under
    counterfactual role reversal, its outputs on x̃; the log-probabilities are computed where they are read."""

    hidden: torch.Tensor
    head: nn.Module
    temperature: float
    counterfactual: Counterfactual | None = None

    @torch.no_grad()
    def targets(self, positions: torch.Tensor) -> torch.Tensor:
        h = self.hidden.reshape(-1, self.hidden.shape[-1]).index_select(0, positions)
        logprobs = output_log_probs(self.head, h, self.temperature)
        cf = self.counterfactual
        if cf is None or cf.mode == "none":
            return logprobs
        slot = cf.slot.index_select(0, positions)
        where = (slot >= 0).nonzero().squeeze(-1)
        cf_logprobs = output_log_probs(self.head, cf.hidden.index_select(0, slot.index_select(0, where)),
                                       self.temperature) if where.numel() else logprobs[:0]
        return perturb_positions(logprobs, cf_logprobs, where, cf.perm, cf.gendered, cf.mode, cf.lam)

    def log_probs(self) -> torch.Tensor:
        batch, length = self.hidden.shape[:2]
        positions = torch.arange(batch * length, device=self.hidden.device)
        return self.targets(positions).view(batch, length, -1)


@dataclass
class CachedTeacherSide(TeacherSide):
    """The stored sparse target of a teacher cache (top-k + tail, perturbation already applied)."""

    target: SparseTarget

    def log_probs(self) -> SparseTarget:
        return self.target

    def targets(self, positions: torch.Tensor) -> SparseTarget:
        return self.target.at_positions(positions)


class TeacherOutputs(NamedTuple):
    """What the teacher gives a training step: its side of the loss (``None`` when no term needs it), its last
    hidden states on x (if asked) and, under counterfactual role reversal, the number of swapped rows."""

    side: TeacherSide | None = None
    hidden: torch.Tensor | None = None
    n_swapped: int | None = None


@torch.no_grad()
def run_teacher(teacher: nn.Module, model_inputs: dict[str, torch.Tensor], *, temperature: float,
                split: tuple[nn.Module, nn.Module] | None = None, swapper: TokenSwapper | None = None,
                mode: str = "none", lam: float = 0.5, need_hidden: bool = False, lazy: bool = False
                ) -> TeacherOutputs:
    """The teacher's side for a batch (dense, or split when ``lazy``), with CRR when ``swapper`` is given.

    ``split``: the teacher's ``(body, output_layer)`` from :func:`split_output_layer`. ``lazy`` (with ``split``):
    keep the final hidden states and compute the targets where the loss reads them (the fused loss), else the
    ``[B, T, V]`` log-probabilities are computed now. ``mode``/``lam``: the perturbation (see
    :mod:`distill.counterfactual.perturbation`).
    """
    if split is not None and lazy:
        body, head = split
        if swapper is not None:
            states, cf_states, slot, hidden, n_swapped = role_reversed_teacher_states(
                body, model_inputs, swapper, need_hidden=need_hidden)
            cf = Counterfactual(cf_states, slot, swapper.perm, swapper.gendered_ids, mode, lam)
            return TeacherOutputs(SplitTeacherSide(states, head, temperature, cf), hidden, n_swapped)
        out = body(**model_inputs, output_hidden_states=need_hidden)
        return TeacherOutputs(SplitTeacherSide(out.last_hidden_state, head, temperature),
                              out.hidden_states[-1] if need_hidden else None)
    if swapper is not None:
        logprobs, hidden, n_swapped = role_reversed_teacher_targets(
            teacher, model_inputs, swapper, temperature=temperature, mode=mode, lam=lam, need_hidden=need_hidden,
            split=split)
        return TeacherOutputs(DenseTeacherSide(logprobs), hidden, n_swapped)
    if split is not None:  # the temperature divides the hidden states, not the logits
        body, head = split
        out = body(**model_inputs, output_hidden_states=need_hidden)
        logprobs = output_log_probs(head, out.last_hidden_state, temperature)
    else:
        out = teacher(**model_inputs, output_hidden_states=need_hidden)
        logprobs = teacher_log_probs(out.logits, temperature, inplace=True)
    return TeacherOutputs(DenseTeacherSide(logprobs), out.hidden_states[-1] if need_hidden else None)


# ------------------------------------------------------------------------------------------------
# output layers: the teacher's and the student's, split off when that is exact
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def split_output_layer(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(body, output_layer)`` of a causal LM whose logits are ``output_layer(body(x).last_hidden_state)``.

    Checked numerically on a probe input, so models that do more in their forward (logit scaling or
    soft-capping, ...) give ``None`` and keep the plain forward.
    """
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or head is None or getattr(head, "weight", None) is None:
        return None
    try:
        probe = (torch.arange(6, device=head.weight.device) * 7919 % head.weight.shape[0])[None]
        full = model(input_ids=probe).logits.float()
        split = head(body(input_ids=probe).last_hidden_state).float()
    except Exception:  # noqa: BLE001 - any model that cannot be split this way keeps the plain forward
        return None
    if full.shape != split.shape or not torch.allclose(full, split, rtol=1e-4, atol=1e-4):
        return None
    return body, head


def output_log_probs(head: nn.Module, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(head(hidden) / T)``; a bias-free float32 output layer takes ``hidden / T`` instead, which is
    the same and touches ``H`` values a position instead of ``V``. On a CPU the logits rows are 64-byte aligned
    where that applies (:func:`~distill.distillation.aligned_logits.linear_log_softmax`)."""
    scaled = temperature != 1.0 and getattr(head, "bias", None) is None and hidden.dtype == torch.float32
    if (temperature == 1.0 or scaled) and aligns(head, hidden):
        return linear_log_softmax(head, hidden / temperature if scaled else hidden)
    if scaled:
        return teacher_log_probs(head(hidden / temperature), 1.0)
    return teacher_log_probs(head(hidden), temperature, inplace=True)


def no_logits(device: torch.device | str | None = None) -> torch.Tensor:
    """``logits_to_keep`` that keeps no position: the model's forward stops before its output layer."""
    return torch.zeros(0, dtype=torch.long, device=device)


@torch.no_grad()
def hidden_output_layer(model: nn.Module) -> nn.Module | None:
    """The output layer of a causal LM whose logits are ``output_layer(hidden_states[-1])`` and whose forward
    takes ``logits_to_keep`` (so a training step can run the forward without its output layer), else ``None``.

    Checked numerically on a probe input in eval mode (the model's mode is restored).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None:
        return None
    was_training = model.training
    model.eval()
    try:
        probe = (torch.arange(6, device=head.weight.device) * 7919 % head.weight.shape[0])[None]
        full = model(input_ids=probe).logits.float()
        out = model(input_ids=probe, output_hidden_states=True, logits_to_keep=no_logits(head.weight.device))
        split = head(out.hidden_states[-1]).float()
        if out.logits.shape[1] != 0 or full.shape != split.shape or not torch.allclose(full, split, rtol=1e-4,
                                                                                        atol=1e-4):
            return None
    except Exception:  # noqa: BLE001 - any model that cannot run this way keeps the plain loss
        return None
    finally:
        model.train(was_training)
    return head


# ------------------------------------------------------------------------------------------------
# counterfactual role reversal: x and the swapped rows of x̃ in one teacher forward
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def role_reversed_teacher_targets(teacher, model_inputs: dict[str, torch.Tensor], swapper: TokenSwapper, *,
                                  temperature: float, mode: str, lam: float = 0.5, need_hidden: bool = False,
                                  split: tuple[nn.Module, nn.Module] | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Perturbed, temperature-softened teacher log-probs ``[B, T, V]``, the teacher's last hidden states on x
    (if asked) and the number of rows whose swapped context x̃ differs from x (run through the teacher).

    ``split``: the teacher's ``(body, output_layer)`` from :func:`split_output_layer`, to skip the shared prefix.
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
    """The teacher body's final hidden states on x and, where they differ, on x̃: what
    :class:`SplitTeacherSide` (through :class:`Counterfactual`) perturbs its targets with, position by position.

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
