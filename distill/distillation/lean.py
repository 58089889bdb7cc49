"""Leaner student activations: the same function, fewer tensors kept for backward where memory is the limit.

Measured at GPT-2 small's shapes (docs/performance.md, "Where the 8 x 1024 peak goes"), a training step keeps,
per student block and per position, about ``H`` floats per norm, ``3H`` for ``c_attn``'s output, ``4H`` twice for the
MLP, and — the bulk at long sequences — the attention core: on a CPU ``scaled_dot_product_attention`` with dropout
has no fused kernel and falls back to the math path, which keeps the scores, the softmax probabilities, the dropout
mask and the dropped probabilities (about :data:`ATTENTION_KEPT_FLOATS` floats per element of the ``[B, heads, T,
T]`` probabilities: 1.3 GB per block at 8 x 1024). Two rewrites, neither of which changes the function the student
computes:

* :func:`recompute_attention`: where the fused kernels cannot run (dropout on, CPU) *and* the attention cores of all
  blocks would keep more than :data:`ATTENTION_KEPT_SHARE` of the memory available to the process
  (:func:`attention_fits`, :func:`distill.runtime.available_memory`; decided once per shape and process), the
  attention core runs under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant, RNG state preserved):
  backward recomputes the probabilities and draws the same dropout mask, so only ``q, k, v`` (already kept by
  ``c_attn``) stay. That costs one more attention-core forward per block in
  backward — 8.5 % of a KD step at 2 x 512 with GPT-2 small's width (docs/performance.md) — so where the cores fit
  they are kept, as for the loss (:func:`distill.distillation.fused_loss.prefers_plain_loss`): the fastest path
  where memory is not the limit, the leanest where it is. On a GPU, SDPA's flash / memory-efficient kernels support
  dropout and keep no probabilities: the plain SDPA path runs there. The choice lives only in
  ``config._attn_implementation``, which is not saved with the model.
* :func:`fuse_gelu`: GPT-2's ``gelu_new`` (``NewGELUActivation``: the tanh approximation written as seven
  elementwise operations, five of whose ``4H``-wide results are kept) becomes ``GELUTanh`` (one
  ``F.gelu(approximate="tanh")`` kernel that keeps its input only) — the same formula, equal to float32 rounding
  (≈ 1e-7). Only the module objects change: the saved config still says ``gelu_new``.

:func:`lean_student` applies both to the student. The teacher runs without gradients, so it keeps no activations and
its attention takes SDPA's fused kernel; :func:`lean_teacher` fuses its GELU only, for speed: one kernel instead of
seven over every ``[B, T, 4H]`` MLP activation of every block (at 2 x 512 with GPT-2 small's 12 blocks, about a tenth
of the teacher forward's time, docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..runtime import available_memory

#: the attention implementation name :func:`recompute_attention` registers with transformers
RECOMPUTE_SDPA = "sdpa_recompute_dropout"
#: float32-sized values SDPA's math path keeps per element of the ``[B, heads, T_q, T_k]`` probabilities under
#: dropout, counted as an upper bound: scores, probabilities and dropped probabilities (3 float32) and the boolean
#: mask (1 byte = 0.25); measured 2.75 ("Where the 8 x 1024 peak goes" in docs/performance.md)
ATTENTION_KEPT_FLOATS = 3.25
#: the share of the available memory the attention cores of all blocks may keep before they are recomputed
#: (the plain loss may take another quarter: :data:`distill.distillation.fused_loss.PLAIN_LOSS_SHARE`)
ATTENTION_KEPT_SHARE = 0.125
_fits_by_shape: dict[tuple[int, ...], bool] = {}


def attention_fits(batch: int, heads: int, q_len: int, k_len: int, layers: int,
                   available: int | None = None) -> bool:
    """Whether ``layers`` attention cores may keep their probabilities for backward:
    :data:`ATTENTION_KEPT_FLOATS` · ``B·heads·T_q·T_k`` · 4 bytes per block within :data:`ATTENTION_KEPT_SHARE` of
    ``available`` bytes (default :func:`~distill.runtime.available_memory`; unknown: 4 GiB)."""
    if available is None:
        available = available_memory()
    if available is None:
        available = 4 * 2**30
    return ATTENTION_KEPT_FLOATS * batch * heads * q_len * k_len * 4 * layers <= ATTENTION_KEPT_SHARE * available


def _keeps_attention(module, query: torch.Tensor, key: torch.Tensor) -> bool:
    """:func:`attention_fits` for this call's shape and the model's number of blocks, decided once per process."""
    layers = getattr(getattr(module, "config", None), "num_hidden_layers", None) or 1
    shape = (query.shape[0], query.shape[1], query.shape[-2], key.shape[-2], layers)
    if shape not in _fits_by_shape:
        _fits_by_shape[shape] = attention_fits(*shape)
    return _fits_by_shape[shape]


def _sdpa_recompute(module, query, key, value, attention_mask, dropout: float = 0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout > 0 and query.device.type == "cpu" and torch.is_grad_enabled() and (
            query.requires_grad or key.requires_grad or value.requires_grad) and not _keeps_attention(
            module, query, key):
        return checkpoint(sdpa_attention_forward, module, query, key, value, attention_mask, dropout=dropout,
                          use_reentrant=False, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(RECOMPUTE_SDPA, _sdpa_recompute)
    AttentionMaskInterface.register(RECOMPUTE_SDPA, sdpa_mask)


def recompute_attention(model: nn.Module) -> bool:
    """Switch a model that uses SDPA attention to :data:`RECOMPUTE_SDPA` (SDPA, the core recomputed in backward
    when it has to run the math path with dropout and the cores do not fit: :func:`attention_fits`). Returns
    whether it switched (other implementations, e.g. ``eager`` or ``flash_attention_2``, are left as they are)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    _register()
    config._attn_implementation = RECOMPUTE_SDPA
    return True


def fuse_gelu(model: nn.Module) -> int:
    """Replace every ``NewGELUActivation`` module by ``GELUTanh`` (the same function, one kernel); returns how many."""
    from transformers.activations import GELUTanh, NewGELUActivation

    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                count += 1
    return count


def lean_student(model: nn.Module) -> dict[str, int | bool]:
    """:func:`recompute_attention` and :func:`fuse_gelu` on the student; what changed."""
    return {"recompute_attention": recompute_attention(model), "fused_gelu": fuse_gelu(model)}


def lean_teacher(model: nn.Module) -> dict[str, int]:
    """:func:`fuse_gelu` on the teacher (it runs without gradients: nothing is kept, only the speed changes)."""
    return {"fused_gelu": fuse_gelu(model)}
