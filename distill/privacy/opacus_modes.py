"""Per-record clipping with opacus' own per-sample gradient machinery (``dp_mode: hooks`` and ``ghost``).

Both attach opacus hooks to the student in place (:class:`~opacus.grad_sample.GradSampleHooks` /
:class:`~opacus.grad_sample.grad_sample_module_fast_gradient_clipping.GradSampleHooksFastGradientClipping`),
so the student stays a plain ``PreTrainedModel`` for saving and evaluation. They share the interface of
:class:`~distill.privacy.bookkeeping.BookKeepingClipper` and exist for comparison and completeness:

* ``hooks``: per-row gradients ``p.grad_sample`` (GPT-2's ``Conv1D`` goes through opacus' functorch
  fallback), summed per record, clipped, summed.
* ``ghost``: opacus' ghost clipping — a first backward gives per-row gradient norms, a second backward of the
  loss reweighted by the clipping factors gives the clipped sum. It clips per *row*: records with several rows
  (two-sided CDA) need ``fast`` or ``hooks``.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from opacus.grad_sample import GradSampleHooks
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import GradSampleHooksFastGradientClipping
from torch import nn

from ..errors import DistillError
from .records import RecordLayout


@contextmanager
def _quiet_output_only_hooks():
    """Silence torch's note that full backward hooks see module outputs only: with the embeddings frozen the
    first block's inputs need no grad, and outputs are all that per-sample gradients need."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                                "respect to module outputs")
        yield


def _accumulate(summed: dict[int, torch.Tensor], p: torch.Tensor, update: torch.Tensor) -> None:
    if id(p) in summed:
        summed[id(p)].add_(update)
    else:
        summed[id(p)] = update.clone()


class _OpacusClipper:
    """Shared plumbing of the opacus modes: trainable parameters and hooks that only record inside ``capture``."""

    def __init__(self, model: nn.Module, hooks):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.hooks = hooks
        self.hooks.disable_hooks()

    @contextmanager
    def capture(self):
        self.hooks.enable_hooks()
        yield self

    def remove(self) -> None:
        self.hooks.cleanup()


class OpacusHooksClipper(_OpacusClipper):
    """``dp_mode: hooks`` — opacus per-sample gradients (hooks, functorch for unsupported layers)."""

    def __init__(self, model: nn.Module):
        super().__init__(model, GradSampleHooks(model, batch_first=True, loss_reduction="sum", strict=False))

    def clip_and_accumulate(self, per_row_loss: torch.Tensor, layout: RecordLayout, max_grad_norm: float,
                            summed: dict[int, torch.Tensor]):
        try:
            with _quiet_output_only_hooks():
                per_row_loss.sum().backward()
        finally:
            self.hooks.disable_hooks()
        grads = []
        for p in self.params:
            gs = p.grad_sample
            if gs is None:
                gs = torch.zeros((layout.num_rows, *p.shape), dtype=torch.float32, device=p.device)
            grads.append(layout.sum_rows(gs.float()))
            p.grad_sample = None
            p.grad = None
        norms = torch.stack([g.reshape(g.shape[0], -1).norm(dim=1) for g in grads]).norm(dim=0)
        factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for p, g in zip(self.params, grads):
            _accumulate(summed, p, torch.einsum("r,r...->...", factors, g).to(p.dtype))
        return norms.detach(), factors.detach()


class OpacusGhostClipper(_OpacusClipper):
    """``dp_mode: ghost`` — opacus ghost clipping (two backward passes, per-row clipping)."""

    def __init__(self, model: nn.Module, max_grad_norm: float):
        super().__init__(model, GradSampleHooksFastGradientClipping(
            model, batch_first=True, loss_reduction="sum", strict=False, max_grad_norm=max_grad_norm,
            use_ghost_clipping=True))

    def clip_and_accumulate(self, per_row_loss: torch.Tensor, layout: RecordLayout, max_grad_norm: float,
                            summed: dict[int, torch.Tensor]):
        if not layout.is_identity:
            self.hooks.disable_hooks()
            raise DistillError("dp_mode ghost clips each row on its own, but this batch has records with several "
                               "rows (e.g. two-sided CDA): use dp_mode fast or hooks.")
        self.hooks.max_grad_norm = max_grad_norm
        try:
            with _quiet_output_only_hooks():
                per_row_loss.sum().backward(retain_graph=True)
            norms = self.hooks.get_norm_sample()
            factors = self.hooks.get_clipping_coef()
        finally:
            self.hooks.disable_hooks()
        for p in self.params:
            p.grad = None
        with _quiet_output_only_hooks():
            (factors.detach() * per_row_loss).sum().backward()
        for p in self.params:
            if p.grad is not None:
                _accumulate(summed, p, p.grad.detach())
            p.grad = None
        return norms.detach(), factors.detach()
