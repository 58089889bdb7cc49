"""Empirical privacy audits of a trained causal LM.

* **Loss-threshold membership inference** (Yeom et al., 2018): score each text by ``−loss`` (mean next-token
  NLL); the attack's AUC between training members and held-out non-members is the Mann-Whitney statistic
  ``U / (n_members · n_non_members)``. 0.5 = no leakage.
* **Canary exposure** (Carlini et al., 2019): rank the inserted canary among ``|R|`` random candidates of
  the same format by the model's log-perplexity; ``exposure = log2 |R| − log2 rank`` (rank 1 = the canary is
  the most likely candidate). Random candidates give exposure ≈ 1 on average; a memorised canary reaches
  ``log2 |R|``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from scipy.stats import mannwhitneyu

from .canary import random_candidates, split_canary


@torch.no_grad()
def sequence_losses(model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 256,
                    reduction: str = "mean") -> list[float]:
    """Next-token NLL of each text (``mean`` over its tokens, or ``sum``). Texts of one token score 0."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts[i:i + batch_size]]
        length = max(max(len(x) for x in ids), 2)
        input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), length), dtype=torch.long)
        for j, x in enumerate(ids):
            input_ids[j, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[j, :len(x)] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       position_ids=position_ids.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, input_ids[:, 1:, None].to(device)).squeeze(-1)
        m = mask[:, 1:].to(device).float()
        tot = (nll * m).sum(-1)
        vals = tot / m.sum(-1).clamp_min(1.0) if reduction == "mean" else tot
        out.extend(vals.tolist())
    return out


def membership_auc(member_losses: list[float], non_member_losses: list[float]) -> float:
    """AUC of the loss-threshold attack (score = −loss): P(score(member) > score(non-member)), ties ½."""
    if not member_losses or not non_member_losses:
        raise ValueError("Membership inference needs at least one member and one non-member.")
    u = mannwhitneyu([-x for x in member_losses], [-x for x in non_member_losses], alternative="two-sided").statistic
    return float(u) / (len(member_losses) * len(non_member_losses))


@dataclass
class ExposureResult:
    canary: str
    exposure: float
    rank: int
    num_candidates: int
    canary_loss: float
    max_exposure: float


def canary_exposure(model, tokenizer, canary: str, num_candidates: int = 1000, seed: int = 0,
                    batch_size: int = 64) -> ExposureResult:
    """Exposure of ``canary`` among ``num_candidates`` random secrets of its format (ranked by total NLL)."""
    prefix, digits = split_canary(canary)
    candidates = random_candidates(prefix, digits, num_candidates, seed=seed, exclude=canary)
    losses = sequence_losses(model, tokenizer, [canary] + candidates, batch_size=batch_size, reduction="sum")
    mine = losses[0]
    rank = 1 + sum(1 for x in losses[1:] if x < mine)
    total = num_candidates + 1  # the canary competes with |R| candidates: ranks 1..|R|+1
    return ExposureResult(canary=canary, exposure=math.log2(total) - math.log2(rank), rank=rank,
                          num_candidates=num_candidates, canary_loss=mine, max_exposure=math.log2(total))


def exposure_dict(result: ExposureResult) -> dict:
    return asdict(result)
