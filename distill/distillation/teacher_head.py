"""The teacher as a body and an output layer, when that reproduces its logits exactly.

Running the output layer ourselves lets the trainer divide the (``H``-wide) hidden states by the temperature
instead of the (``V``-wide) logits, and lets counterfactual role reversal apply the output layer to only the
positions of x̃ that differ from x (:mod:`distill.distillation.teacher_forward`). The student's output layer is
split off the same way, through its own forward (``logits_to_keep`` empty, last hidden state kept), so that the
fused loss (:mod:`distill.distillation.fused_loss`) runs both output layers chunk by chunk.
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import teacher_log_probs


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
    the same and touches ``H`` values a position instead of ``V``."""
    if temperature != 1.0 and getattr(head, "bias", None) is None and hidden.dtype == torch.float32:
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
