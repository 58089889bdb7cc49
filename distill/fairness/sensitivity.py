r"""Prediction sensitivity (Krishna et al., ACL 2022) adapted to a causal LM's next-token prediction.

Krishna et al. measure fairness by how much a model's prediction moves with the input features that encode a
protected attribute, weighting each feature's gradient by how much it encodes the attribute. For a causal LM:

* **Prediction.** For a prompt x (the builtin gender-neutral occupation prompts), f(x) is the log-odds of a
  female vs a male next word:  f(x) = log Σ_{w∈F} p(w | x) − log Σ_{w∈M} p(w | x),  over F / M = the two
  sides of the gendered single-token pairs of the next-word lists (``Ġshe``/``Ġhe``, ``Ġher``/``Ġhis``,
  ``Ġwoman``/``Ġman`` …; paired, so f is antisymmetric under the gender permutation R).
* **Gender direction.** g = mean over the tokenizer's gendered token pairs (f, m) (all casings, with and
  without the leading space, :func:`distill.counterfactual.gender_token_pairs`) of E[f] − E[m], on the model's
  input embedding matrix E; ĝ = g / ‖g‖.
* **Sensitivity of one prompt** with input token embeddings e_1 … e_n:

      PS(x) = Σ_i c_i · |⟨∂f(x)/∂e_i, ĝ⟩|,      c_i = |cos(e_i, g)| = |⟨e_i, ĝ⟩| / ‖e_i‖ ∈ [0, 1].

  ⟨∂f/∂e_i, ĝ⟩ is the change of the log-odds per unit move of token i's embedding along the gender
  direction; c_i is how strongly token i already encodes gender. A prompt about a nurse scores high when the
  *nurse* embedding carries gender *and* the prediction follows it. The gradient is taken with respect to the
  token embeddings (``inputs_embeds``, before position embeddings).
* **Reported:** ``prediction_sensitivity`` = mean PS(x) over the prompts (log-odds per unit embedding
  norm; 0 = the prediction does not follow gender-encoding input features), per occupation, and
  ``directional_sensitivity`` = mean Σ_i |⟨∂f/∂e_i, ĝ⟩| (no c_i weights: the dependence on any token's gender
  component, which is large for any model that uses *she* to predict *her*).

A model whose non-gendered embeddings carry no gender component (c_i = 0), e.g. one symmetric under the gender
permutation, scores exactly 0; a model and its role-reversed twin score the same (PS is a magnitude). One
backward pass a batch; no library computes this for an LM, hence this module.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import DistillError
from .generation import eval_mode, model_device
from .lexicon import FEMALE_NEXT_WORDS, MALE_NEXT_WORDS
from .scoring import _check_length, _ids, _length_batches, _pad


def _pairs(tokenizer) -> list[tuple[int, int]]:
    from ..counterfactual.token_pairs import gender_token_pairs

    pairs = gender_token_pairs(tokenizer)
    if not pairs:
        raise DistillError("The tokenizer has no single-token gendered word pairs (he/she ...), so the gender "
                           "direction cannot be measured.")
    return pairs


def paired_next_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """``(female_ids, male_ids)``, position-paired: the leading-space gendered token pairs whose words are in
    the co-occurrence next-word lists."""
    female, male = [], []
    for m_id, f_id in _pairs(tokenizer):
        m, f = tokenizer.decode([m_id]), tokenizer.decode([f_id])
        if m.startswith(" ") and m.strip() in MALE_NEXT_WORDS and f.strip() in FEMALE_NEXT_WORDS:
            male.append(m_id)
            female.append(f_id)
    if not male:
        raise DistillError("The tokenizer encodes none of ' he'/' she' (and the other gendered next words) as "
                           "single tokens, so prediction sensitivity cannot be measured.")
    return female, male


def gender_direction(embedding: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``g = mean_{(m, f)} E[f] − E[m]`` on an embedding matrix ``E [V, d]`` (float32 ``[d]``)."""
    m = torch.tensor([p[0] for p in pairs], device=embedding.device)
    f = torch.tensor([p[1] for p in pairs], device=embedding.device)
    return (embedding[f].float() - embedding[m].float()).mean(0)


def prompt_sensitivities(model, tokenizer, prompts: Sequence[str], batch_size: int = 32, progress: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(PS, directional sensitivity, f)`` per prompt (float64 ``[N]`` each)."""
    female, male = paired_next_token_ids(tokenizer)
    emb_layer = model.get_input_embeddings()
    g = gender_direction(emb_layer.weight.detach(), _pairs(tokenizer))
    if float(g.norm()) == 0.0:
        raise DistillError("The model's gendered token pairs have identical embeddings (gender direction 0): "
                           "prediction sensitivity is undefined for it.")
    g_hat = g / g.norm()
    rows = _ids(tokenizer, prompts)
    if any(not r for r in rows):
        raise DistillError("An empty prompt cannot be scored.")
    if not rows:
        return torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.float64), torch.empty(0)
    _check_length(model, max(len(r) for r in rows))
    device = model_device(model)
    f_ids, m_ids = torch.tensor(female, device=device), torch.tensor(male, device=device)
    ps = torch.empty(len(rows), dtype=torch.float64)
    ds = torch.empty(len(rows), dtype=torch.float64)
    fx = torch.empty(len(rows), dtype=torch.float64)
    params = [p for p in model.parameters()]
    grad_flags = [p.requires_grad for p in params]
    with eval_mode(model):
        for p in params:  # only the input gradient is needed
            p.requires_grad_(False)
        try:
            for idx in tqdm(_length_batches([len(r) for r in rows], batch_size), desc="Prediction sensitivity",
                            disable=not progress):
                ids, mask = _pad([rows[i] for i in idx], device)
                embeds = emb_layer(ids).detach().float().requires_grad_(True)
                dtype = emb_layer.weight.dtype
                logits = model(inputs_embeds=embeds.to(dtype), attention_mask=mask).logits.float()
                last = mask.sum(1) - 1
                lp = torch.log_softmax(logits[torch.arange(len(idx), device=device), last], dim=-1)
                f = torch.logsumexp(lp[:, f_ids], -1) - torch.logsumexp(lp[:, m_ids], -1)
                (grad,) = torch.autograd.grad(f.sum(), embeds)
                proj = (grad @ g_hat.to(device)).abs() * mask  # |<df/de_i, g_hat>| [B, L]
                e = embeds.detach()
                cos = ((e @ g_hat.to(device)).abs() / e.norm(dim=-1).clamp_min(1e-12)) * mask
                ps[idx] = (cos * proj).sum(1).double().cpu()
                ds[idx] = proj.sum(1).double().cpu()
                fx[idx] = f.detach().double().cpu()
        finally:
            for p, flag in zip(params, grad_flags):
                p.requires_grad_(flag)
    return ps, ds, fx


def prediction_sensitivity(model, tokenizer, prompts: Sequence[str] | None = None,
                           groups: Sequence[str] | None = None, batch_size: int = 32,
                           progress: bool = False) -> dict[str, Any]:
    """Mean PS and directional sensitivity over ``prompts`` (default: the builtin gender-neutral occupation
    prompts, grouped by occupation), with per-group means."""
    if prompts is None:
        from .prompts import builtin_prompts

        neutral = builtin_prompts().neutral
        prompts, groups = [p.text for p in neutral], [p.group for p in neutral]
    prompts = list(prompts)
    if not prompts:
        raise DistillError("prediction sensitivity needs at least one prompt.")
    ps, ds, fx = prompt_sensitivities(model, tokenizer, prompts, batch_size, progress)
    out: dict[str, Any] = {"num_prompts": len(prompts), "prediction_sensitivity": float(ps.mean()),
                           "directional_sensitivity": float(ds.mean()), "mean_log_odds": float(fx.mean())}
    if groups is not None:
        per = defaultdict(list)
        for gname, v in zip(groups, ps.tolist()):
            per[gname].append(v)
        out["per_group"] = {k: sum(v) / len(v) for k, v in per.items()}
    return out
