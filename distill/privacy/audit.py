"""Empirical privacy audits of a trained causal LM.

* **Loss-threshold membership inference** (Yeom et al., 2018): score each text by ``−loss`` (mean next-token
  NLL); the attack's AUC between training members and held-out non-members is the Mann-Whitney statistic
  ``U / (n_members · n_non_members)``. 0.5 = no leakage.
* **Reference-calibrated membership inference** (Carlini et al., 2022 "LiRA"-style offline calibration; Watson et
  al., 2022): score ``= reference loss − model loss`` on each text. The public teacher is the natural reference:
  it never saw the private data, so the difference removes how hard a text is in general and keeps what the
  student learnt about that text. Much stronger than the plain threshold at low false-positive rates.
* **ROC, AUC, TPR at low FPR** (:func:`roc_curve`, :func:`tpr_at_fpr`): written from the definitions (no
  scikit-learn dependency); TPR at 1 % and 0.1 % FPR is the figure of merit for membership inference (Carlini et
  al., 2022), since an attack that is confident on a few records matters even when its AUC is near 0.5.
* **Canary extraction** (:func:`extract_canaries`): decode the secret's digits from its prefix, greedy and with
  beam search restricted to the digit tokens, batched over canaries; report whether greedy decoding emits the
  canary and at which rank it appears among the beams (``None``: not among them).
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


def roc_curve(positive: list[float], negative: list[float]) -> tuple[list[float], list[float]]:
    """The ROC of the rule ``score ≥ t`` over every threshold ``t`` (higher score = "member").

    Returns ``(fpr, tpr)`` from (0, 0) to (1, 1), one point per distinct score (ties move both rates at once).
    """
    if not positive or not negative:
        raise ValueError("A ROC needs at least one positive (member) and one negative (non-member) score.")
    scored = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative], key=lambda x: -x[0])
    fpr, tpr, tp, fp, i = [0.0], [0.0], 0, 0, 0
    while i < len(scored):
        t = scored[i][0]
        while i < len(scored) and scored[i][0] == t:
            tp += scored[i][1]
            fp += 1 - scored[i][1]
            i += 1
        fpr.append(fp / len(negative))
        tpr.append(tp / len(positive))
    return fpr, tpr


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """Area under :func:`roc_curve` (trapezoids; equals P(pos > neg) + ½ P(tie))."""
    fpr, tpr = roc_curve(positive, negative)
    return float(sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr))))


def tpr_at_fpr(positive: list[float], negative: list[float], max_fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is ≤ ``max_fpr`` (0 when none but "nobody" qualifies).

    With ``n`` non-members, FPRs below ``1/n`` can only be met by flagging no non-member at all: the value is
    then the share of members scored above every non-member.
    """
    fpr, tpr = roc_curve(positive, negative)
    return float(max(t for f, t in zip(fpr, tpr) if f <= max_fpr + 1e-12))


def attack_report(name: str, member_scores: list[float], non_member_scores: list[float]) -> dict:
    """AUC and TPR at 1 % / 0.1 % FPR of one attack (higher score = "member")."""
    return {"attack": name, "auc": roc_auc(member_scores, non_member_scores),
            "tpr_at_1pct_fpr": tpr_at_fpr(member_scores, non_member_scores, 0.01),
            "tpr_at_0.1pct_fpr": tpr_at_fpr(member_scores, non_member_scores, 0.001),
            "num_members": len(member_scores), "num_non_members": len(non_member_scores),
            "min_resolvable_fpr": 1.0 / len(non_member_scores)}


def membership_attacks(member_losses: list[float], non_member_losses: list[float],
                       member_reference: list[float] | None = None,
                       non_member_reference: list[float] | None = None) -> dict:
    """The loss-threshold attack and, given the reference model's losses, the reference-calibrated one."""
    out = {"loss_threshold": attack_report("loss threshold (score = -loss)", [-x for x in member_losses],
                                           [-x for x in non_member_losses])}
    out["loss_threshold"].update(mean_member_loss=sum(member_losses) / len(member_losses),
                                 mean_non_member_loss=sum(non_member_losses) / len(non_member_losses))
    if member_reference is not None and non_member_reference is not None:
        out["reference_calibrated"] = attack_report(
            "reference-calibrated (score = reference loss - model loss)",
            [r - x for r, x in zip(member_reference, member_losses)],
            [r - x for r, x in zip(non_member_reference, non_member_losses)])
    return out


def _digit_tokens(tokenizer, prefix: str) -> list[int] | None:
    """The ids of " 0" … " 9" when each is one token after ``prefix`` (else None: no constrained decoding)."""
    base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for d in "0123456789":
        full = tokenizer(f"{prefix} {d}", add_special_tokens=False)["input_ids"]
        if full[:len(base)] != base or len(full) != len(base) + 1:
            return None
        ids.append(full[-1])
    return ids


@torch.no_grad()
def extract_canaries(model, tokenizer, canaries: list[str], num_beams: int = 10) -> list[dict]:
    """Decode each canary's digits from its prefix: greedy, and beam search (``num_beams`` beams), batched.

    Decoding is restricted to the digit tokens (``" 0"`` … ``" 9"``), as an attacker who knows the secret's
    format would. Per canary: the greedy guess, whether it is the canary, and the canary's rank among the
    beams (1 = the most likely; ``None`` = not among them).
    """
    model.eval()
    device = next(model.parameters()).device
    out: list[dict] = []
    groups: dict[tuple[str, int], list[str]] = {}
    for c in canaries:
        groups.setdefault(split_canary(c), []).append(c)
    for (prefix, n_digits), group in groups.items():
        digits = _digit_tokens(tokenizer, prefix)
        if digits is None:
            raise ValueError(f"The tokenizer does not split '{prefix} 0' … '{prefix} 9' into the prefix plus one "
                             "token per digit: canary extraction needs that format.")
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([prefix_ids] * len(group), device=device)
        allowed = lambda batch_id, ids: digits  # noqa: E731 - only digits after the prefix
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        common = dict(max_new_tokens=n_digits, min_new_tokens=n_digits, prefix_allowed_tokens_fn=allowed,
                      pad_token_id=pad, attention_mask=torch.ones_like(input_ids), do_sample=False)
        greedy = model.generate(input_ids, num_beams=1, **common)[:, len(prefix_ids):]
        beams = model.generate(input_ids, num_beams=num_beams, num_return_sequences=num_beams, **common)
        beams = beams[:, len(prefix_ids):].reshape(len(group), num_beams, -1)
        for i, canary in enumerate(group):
            secret = tokenizer(canary, add_special_tokens=False)["input_ids"][len(prefix_ids):]
            guesses = [row.tolist() for row in beams[i]]
            rank = next((r + 1 for r, g in enumerate(guesses) if g == secret), None)
            guess = tokenizer.decode(greedy[i]).strip()
            out.append({"canary": canary, "greedy_guess": f"{prefix} {guess}",
                        "extracted_greedy": greedy[i].tolist() == secret, "beam_rank": rank, "num_beams": num_beams,
                        "digits_correct_greedy": sum(a == b for a, b in zip(greedy[i].tolist(), secret))})
    return out


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
