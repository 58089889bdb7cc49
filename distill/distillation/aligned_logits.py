"""Output layers whose logits rows start on a cache line: the same logits, written faster on a CPU.

A causal LM's output layer ``z = h Wᵀ + b`` writes ``[N, V]`` logits. With an odd vocabulary (GPT-2's V = 50257)
the rows of a contiguous float32 ``[N, V]`` tensor start at every offset within a 64-byte cache line, and the CPU
GEMM's vector stores straddle lines. Written into the ``[:, :V]`` view of an ``[N, V_pad]`` buffer instead — the
same GEMM, the same numbers, only the output's row stride differs — GPT-2's output layer on 1024 positions took
0.42 s against 0.56 s into a fresh contiguous tensor, and a whole KD step at 2 x 512 with GPT-2's shapes 0.95x the
step with the models' own output layers (machine D, ``scripts/bench_step_bound.py``, docs/performance.md).

* :func:`aligned_linear` / :func:`linear_logits` — ``F.linear(h, W, b)`` / ``layer(h)`` for an ``nn.Linear`` (any
  ``[..., H]`` input), computed into a buffer ``[N, V_pad]``, ``V_pad`` = V rounded up to :data:`ROW_ALIGN` floats
  (64 bytes), and returned as its ``[..., V]`` view, with its own backward (``∂h = g W``, ``∂W = gᵀ h``,
  ``∂b = Σ g``). Callers see ``F.linear``'s shape and values; the rows are 64-byte aligned.
* :func:`linear_log_softmax` — ``log softmax(layer(h))`` (no gradient: the teacher's targets). The buffer's pad
  columns hold ``-inf``, so the softmax runs over whole contiguous padded rows (``exp(-inf) = 0``: the same
  normaliser) and the ``[..., V]`` view of the result is returned; ``F.log_softmax`` of a strided view would copy it
  first.

Used for the teacher's targets (:func:`distill.distillation.teacher_side.output_log_probs`), the fused loss's chunks
(:mod:`distill.distillation.fused_loss`) and the plain loss's student logits (the trainer runs the student's forward
without its output layer, except under DP-SGD, whose per-sample machinery hooks the student's modules, and under
bf16/fp16, whose autocast the forward applies). Where it applies (:func:`tensors_align`, :func:`aligns`): float32
CPU tensors, CPU autocast off, V not already a multiple of :data:`ROW_ALIGN`, and for a module an exact ``nn.Linear``
(subclasses may override ``forward``). Everywhere else — accelerators (their GEMM libraries choose kernels by
alignment themselves; not measured here), autocast, quantised or adapted layers — the functions are the plain
``F.linear`` / ``layer(h)``. :data:`ENABLED` switches the aligned paths off for side-by-side runs.

Own code because PyTorch has no option for the row stride of ``F.linear``'s output, and padding the vocabulary
itself (``resize_token_embeddings(pad_to_multiple_of=…)``) would change the shapes of the models a distillation
run loads and saves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: float32 values per 64 bytes: one cache line, one AVX-512 register
ROW_ALIGN = 16


def padded_width(width: int) -> int:
    """``width`` rounded up to a multiple of :data:`ROW_ALIGN`."""
    return -(-width // ROW_ALIGN) * ROW_ALIGN


#: whether the aligned paths run at all (for side-by-side benchmarks and tests; the values are the same either way)
ENABLED = True


def tensors_align(weight: torch.Tensor, hidden: torch.Tensor | None = None) -> bool:
    """Whether ``F.linear(hidden, weight, …)``'s output rows are padded by :func:`aligned_linear`: float32 CPU
    tensors, CPU autocast off, and a number of outputs that is not a multiple of :data:`ROW_ALIGN`."""
    return (ENABLED and weight.device.type == "cpu" and weight.dtype == torch.float32
            and (hidden is None or (hidden.dtype == torch.float32 and hidden.device.type == "cpu"))
            and not torch.is_autocast_enabled("cpu") and weight.shape[0] % ROW_ALIGN != 0)


def aligns(layer: nn.Module, hidden: torch.Tensor | None = None) -> bool:
    """Whether :func:`linear_logits` / :func:`linear_log_softmax` pad ``layer``'s output rows (for ``hidden``, if
    given): an exact ``nn.Linear`` whose tensors align (:func:`tensors_align`)."""
    return type(layer) is nn.Linear and tensors_align(layer.weight, hidden)


def _padded_buffer(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   fill: float | None = None) -> torch.Tensor:
    """``[N, V_pad]``: ``hidden @ weight.T + bias`` (``hidden`` ``[N, H]``) in its first V columns, ``fill`` in the
    others (left unset when ``None``)."""
    vocab = weight.shape[0]
    buffer = hidden.new_empty(hidden.shape[0], padded_width(vocab))
    if fill is not None:
        buffer[:, vocab:] = fill
    out = buffer[:, :vocab]
    if bias is None:
        torch.mm(hidden, weight.t(), out=out)
    else:
        torch.addmm(bias, hidden, weight.t(), out=out)
    return buffer


class _AlignedLinear(torch.autograd.Function):
    """``F.linear(h, W, b)`` for ``h`` ``[N, H]``, written into row-aligned storage (see the module docstring)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(hidden, weight)
        return _padded_buffer(hidden, weight, bias)[:, :weight.shape[0]]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, weight = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad  # (False for an absent bias)
        return (grad @ weight if need_hidden else None, grad.t() @ hidden if need_weight else None,
                grad.sum(0) if need_bias else None)


def aligned_linear(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(hidden, weight, bias)``, with 64-byte-aligned output rows where :func:`tensors_align`
    (differentiable)."""
    if not tensors_align(weight, hidden):
        return F.linear(hidden, weight, bias)
    flat = hidden.reshape(-1, hidden.shape[-1])
    return _AlignedLinear.apply(flat, weight, bias).view(*hidden.shape[:-1], weight.shape[0])


def linear_logits(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``layer(hidden)``, with 64-byte-aligned output rows where :func:`aligns` (differentiable)."""
    return aligned_linear(hidden, layer.weight, layer.bias) if aligns(layer, hidden) else layer(hidden)


@torch.no_grad()
def linear_log_softmax(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``log softmax(layer(hidden))`` over the last dimension in float32, with 64-byte-aligned rows where
    :func:`aligns` (no gradient)."""
    if not aligns(layer, hidden):
        return F.log_softmax(layer(hidden).float(), dim=-1)
    vocab = layer.weight.shape[0]
    padded = _padded_buffer(hidden.reshape(-1, hidden.shape[-1]), layer.weight, layer.bias, fill=float("-inf"))
    return F.log_softmax(padded, dim=-1)[:, :vocab].view(*hidden.shape[:-1], vocab)
