"""Per-record gradient clipping in one forward and one backward pass (book-keeping, Bu et al. 2023).

The ``fast`` DP mode. Forward hooks keep each trainable layer's input ``a`` ``[B, T, d_in]`` and its output
tensor; a single ``torch.autograd.grad`` call returns the output gradients ``g`` ``[B, T, d_out]`` of every
such layer *without* computing any weight gradient (weights are not among the differentiated inputs), so
the backward pass costs about one activation backward. From ``(a, g)``:

* per-record squared gradient norms, per layer, by whichever is cheaper for its shape —
  the ghost-norm identity ``‖Σ_t a_t g_tᵀ‖² = Σ_{t,t'} (a_t·a_t')(g_t·g_t')`` (cost ``T²·(d_in+d_out)``) or
  the per-record gradient ``Σ_t a_t g_tᵀ`` itself (cost ``T·d_in·d_out``); norm-layer and bias gradients
  directly: LayerNorm's weight ``Σ_t x̂_t ⊙ g_t`` with ``x̂ = (x − mean(x)) / √(var(x) + ε)`` and bias ``Σ_t g_t``;
  RMSNorm's weight ``Σ_t x̂_t ⊙ g_t`` with ``x̂ = x / √(mean(x²) + ε)`` (no bias; the same for Gemma's ``(1 + w)``
  scaling);
* clipping factors ``c_r = min(1, C / ‖∇ℓ_r‖)`` from the total per-record norm over all layers;
* the clipped sum ``Σ_r c_r ∇ℓ_r`` per layer as one matmul/einsum.

Rows of one record (see :class:`~distill.privacy.records.RecordLayout`) are concatenated along the token
axis, so a record and its counterfactual copy get one gradient and one clipping factor.

Supported trainable layers: ``nn.Linear`` (with or without bias), GPT-2's ``Conv1D`` (weight ``[d_in, d_out]``),
``nn.LayerNorm``, and RMSNorm — torch's ``nn.RMSNorm`` and the per-architecture classes of transformers
(``LlamaRMSNorm``, ``Qwen2RMSNorm``, ``MistralRMSNorm``, ...: a class whose name ends with ``RMSNorm``, with a
``weight`` and ``variance_epsilon`` or ``eps``). Anything else that is trainable is refused with a pointer to
``dp_mode hooks``, whose opacus per-sample gradients fall back to functorch for any layer. Embeddings and
the output layer must be frozen (the DP engine freezes them: they are the public teacher's).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import DistillError
from .records import RecordLayout

SUPPORTED_LAYERS = (nn.Linear, Conv1D, nn.LayerNorm)


def rms_norm_eps(module: nn.Module) -> float | None:
    """ε of an RMSNorm layer the fast clipper handles, or ``None`` when ``module`` is not one.

    ``nn.RMSNorm`` and transformers' ``*RMSNorm`` classes: a 1-or-more-dimensional ``weight`` as the only
    trainable parameter and ``variance_epsilon`` or ``eps`` (``eps=None``: the dtype's machine epsilon)."""
    if not type(module).__name__.endswith("RMSNorm"):
        return None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter):
        return None
    if any(p is not weight for p in module.parameters(recurse=False) if p.requires_grad):
        return None
    for attr in ("variance_epsilon", "eps"):
        if hasattr(module, attr):
            eps = getattr(module, attr)
            return float(torch.finfo(torch.float32).eps if eps is None else eps)
    return None


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if isinstance(module, (nn.Linear, Conv1D)):
        return "linear"
    if rms_norm_eps(module) is not None:
        return "rmsnorm"
    return None


def _as_3d(x: torch.Tensor) -> torch.Tensor:
    """``[B, d]`` → ``[B, 1, d]``; ``[B, ..., d]`` → ``[B, T, d]``."""
    if x.dim() == 2:
        return x[:, None, :]
    return x.reshape(x.shape[0], -1, x.shape[-1])


class BookKeepingClipper:
    """Per-record clipped gradient sums for a model's trainable Linear/Conv1D/LayerNorm/RMSNorm layers.

    Usage::

        clipper = BookKeepingClipper(model)
        with clipper.capture():
            per_row_loss = ...          # [B] loss of each row, from a forward pass of `model`
        norms, factors = clipper.clip_and_accumulate(per_row_loss, layout, max_grad_norm, summed)

    ``summed`` maps ``id(param)`` of each trainable parameter to its running clipped-gradient sum.
    """

    def __init__(self, model: nn.Module):
        self.layers: list[tuple[str, nn.Module]] = []
        self._kinds: dict[nn.Module, str] = {}
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            kind = _kind(module)
            if kind is None:
                raise DistillError(
                    f"dp_mode fast computes per-record gradients for Linear, Conv1D, LayerNorm and RMSNorm layers; "
                    f"'{name}' ({type(module).__name__}) has trainable parameters: freeze it or use dp_mode hooks "
                    "(opacus per-sample gradients, any layer)."
                )
            self._kinds[module] = kind
            self.layers.append((name, module))
        if not self.layers:
            raise DistillError("The student has no trainable parameters to train with DP.")
        self.params = [p for _, m in self.layers for p in m.parameters(recurse=False) if p.requires_grad]
        self._active = False
        self._captured: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self._handles = [m.register_forward_hook(self._forward_hook) for _, m in self.layers]

    # ---- capture ---------------------------------------------------------------------------------
    def _forward_hook(self, module, inputs, output):
        if self._active and torch.is_grad_enabled():
            self._captured.append((module, inputs[0].detach(), output))

    @contextmanager
    def capture(self):
        """Record layer inputs/outputs of the forward passes run inside the block."""
        self._captured = []
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- per-layer maths -----------------------------------------------------------------------------
    @staticmethod
    def _linear_norms(module, a, g, layout: RecordLayout):
        """Per-record squared norms of the weight (and bias) gradient, and what the clipped sum reuses."""
        a_r, g_r = layout.concat_tokens(a), layout.concat_tokens(g)
        tokens, d_in, d_out = a_r.shape[1], a_r.shape[2], g_r.shape[2]
        norm2 = a_r.new_zeros(a_r.shape[0])
        grads = bias_grads = None
        if module.weight.requires_grad:
            if tokens * (d_in + d_out) < d_in * d_out:  # ghost norm is cheaper than the gradient itself
                aa = torch.bmm(a_r, a_r.transpose(1, 2))
                gg = torch.bmm(g_r, g_r.transpose(1, 2))
                norm2 = norm2 + (aa * gg).sum(dim=(1, 2)).clamp_min(0.0)
            else:
                grads = torch.bmm(a_r.transpose(1, 2), g_r)  # [R, d_in, d_out]
                norm2 = norm2 + grads.pow(2).sum(dim=(1, 2))
        if module.bias is not None and module.bias.requires_grad:
            bias_grads = g_r.sum(dim=1)
            norm2 = norm2 + bias_grads.pow(2).sum(dim=1)
        return norm2, (grads, bias_grads)

    @staticmethod
    def _layernorm_grads(module, a, g, layout: RecordLayout):
        xhat = F.layer_norm(a, module.normalized_shape, eps=module.eps)
        dims = tuple(range(1, a.dim() - len(module.normalized_shape)))
        gw = layout.sum_rows((xhat * g).sum(dim=dims)) if module.weight is not None else None
        gb = layout.sum_rows(g.sum(dim=dims)) if module.bias is not None else None
        norm2 = 0
        for p, gr in ((module.weight, gw), (module.bias, gb)):
            if p is not None and p.requires_grad:
                norm2 = norm2 + gr.reshape(gr.shape[0], -1).pow(2).sum(1)
        return norm2, (gw, gb)

    @staticmethod
    def _rmsnorm_grads(module, a, g, layout: RecordLayout):
        eps = rms_norm_eps(module)
        nd = module.weight.dim()
        dims_norm = tuple(range(a.dim() - nd, a.dim()))
        xhat = a * torch.rsqrt(a.pow(2).mean(dim=dims_norm, keepdim=True) + eps)
        dims = tuple(range(1, a.dim() - nd))
        gw = layout.sum_rows((xhat * g).sum(dim=dims))
        return gw.reshape(gw.shape[0], -1).pow(2).sum(1), (gw, None)

    # ---- the step --------------------------------------------------------------------------------------
    def clip_and_accumulate(self, per_row_loss: torch.Tensor, layout: RecordLayout, max_grad_norm: float,
                            summed: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward once, clip per record, add ``Σ_r c_r ∇ℓ_r`` into ``summed``.

        Returns the per-record gradient norms before clipping and the clipping factors (``[R]`` each).
        """
        captured, self._captured = self._captured, []
        self._active = False  # gradient checkpointing reruns the forward inside this backward: nothing to capture
        if not captured:
            raise DistillError("No trainable layer ran in the forward pass under dp_mode fast.")
        seen = set()
        for module, _, _ in captured:
            if module in seen:
                raise DistillError(f"{type(module).__name__} ran twice in one forward pass (shared weights); "
                                   "dp_mode fast needs each trainable layer to run once: use dp_mode hooks.")
            seen.add(module)
        outputs = [out for _, _, out in captured]
        grads_out = torch.autograd.grad(per_row_loss.sum(), outputs, allow_unused=True)

        norm2 = None
        stash = []
        for (module, a, out), g in zip(captured, grads_out):
            if g is None:
                g = torch.zeros_like(out)
            kind = self._kinds[module]
            if kind == "layernorm":
                n2, parts = self._layernorm_grads(module, a.float(), g.float(), layout)
            elif kind == "rmsnorm":
                n2, parts = self._rmsnorm_grads(module, a.float(), g.float(), layout)
            else:
                n2, parts = self._linear_norms(module, _as_3d(a).float(), _as_3d(g).float(), layout)
            norm2 = n2 if norm2 is None else norm2 + n2
            stash.append((module, a, g, parts))
        norms = norm2.sqrt()
        factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        row_factors = layout.per_row(factors)

        for module, a, g, parts in stash:
            if self._kinds[module] in ("layernorm", "rmsnorm"):
                gw, gb = parts
                updates = [(module.weight, gw), (getattr(module, "bias", None), gb)]
                updates = [(p, torch.einsum("r,r...->...", factors, gr)) for p, gr in updates
                           if p is not None and p.requires_grad]
            else:
                grads, bias_grads = parts
                updates = []
                if module.weight.requires_grad:
                    if grads is not None:
                        w = torch.einsum("r,rio->io", factors, grads)
                    else:
                        a2, g2 = _as_3d(a).float(), _as_3d(g).float()
                        w = a2.reshape(-1, a2.shape[-1]).t() @ (g2 * row_factors[:, None, None]).reshape(-1, g2.shape[-1])
                    if isinstance(module, nn.Linear):
                        w = w.t()
                    updates.append((module.weight, w))
                if bias_grads is not None:
                    updates.append((module.bias, factors @ bias_grads))
            for p, update in updates:
                update = update.to(p.dtype).reshape(p.shape)
                if id(p) in summed:
                    summed[id(p)].add_(update)
                else:
                    summed[id(p)] = update.clone()
        return norms.detach(), factors.detach()
