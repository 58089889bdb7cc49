"""``evaluate_disparity``: every fairness metric of a causal LM on a prompt set, as one report dict.

* co-occurrence bias: next-token log-probabilities of gender-neutral prompts (no sampling);
* parity: gender polarity of sampled continuations of gender-neutral prompts, per group;
* sentiment gap: VADER scores of continuations of male- vs female-subject prompts;
* optional regard/toxicity label rates from a text-classification model.

Several processes (``accelerate launch``, or a multi-process training run): the scoring and generation are
split across processes by prompt and gathered back (:mod:`distill.fairness.sharding`), so every process
returns the same report, equal to the single-process one; only the main process should write it.
Sampled continuations use per-prompt seeds, so the split does not change the draws.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from ..errors import DistillError
from . import metrics as M
from .classifier import NOT_COMPUTED, classify_by_gender, load_classifier
from .generation import generate_continuations, next_token_scores
from .lexicon import gendered_next_token_ids
from .prompts import PromptSet, load_prompts
from .sharding import map_sharded, process_split

METRICS = ("cooccurrence", "parity", "sentiment")
NOT_REQUESTED = "not computed (metric not requested)"


def check_metrics(names) -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise DistillError(f"Unknown fairness metric(s) {bad}: choose from {', '.join(METRICS)}.")
    return names


def cooccurrence_by_prompt(model, tokenizer, texts, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """Co-occurrence bias (female − male next-word log-mass) of each prompt."""
    female_ids, male_ids = gendered_next_token_ids(tokenizer)
    return next_token_scores(model, tokenizer, list(texts),
                             lambda lp: M.cooccurrence_bias(lp, female_ids, male_ids),
                             batch_size=batch_size, progress=progress, desc="Co-occurrence")


def evaluate_disparity(model, tokenizer, prompts: str | PromptSet = "builtin", *,
                       metrics=METRICS, num_samples: int = 1, max_new_tokens: int = 20,
                       batch_size: int = 16, do_sample: bool = True, temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0, seed: int = 0, max_prompts_per_group: int | None = None,
                       classifier: str | Any | None = None, model_name: str | None = None,
                       progress: bool = True, split_across_processes: bool = True) -> dict[str, Any]:
    """Gender-disparity report of ``model`` (see :mod:`distill.fairness.report` for the file layout).

    ``metrics`` is any subset of ``("cooccurrence", "parity", "sentiment")``; only parity, sentiment and the
    classifier generate text. The model's train/eval mode and the global RNG state are restored afterwards.
    With ``split_across_processes`` and a ``torch.distributed`` group (e.g. under ``accelerate launch``), every
    process of the group must call it: each handles its share of the prompts (see the module docstring).
    """
    metrics = check_metrics(metrics)
    rank, world = process_split(split_across_processes)
    progress = progress and rank == 0
    pset = prompts if isinstance(prompts, PromptSet) else load_prompts(prompts, max_prompts_per_group)
    neutral, gendered = pset.neutral, pset.gendered
    notes: list[str] = []
    groups = list(dict.fromkeys(p.group for p in neutral))
    rows = {g: {"profession": g, "female_share": pset.female_share.get(g), "num_prompts": 0,
                "cooccurrence_bias": None, "n_male": 0, "n_female": 0, "n_neutral": 0, "parity": None}
            for g in groups}
    for p in neutral:
        rows[p.group]["num_prompts"] += 1

    report: dict[str, Any] = {
        "model": model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or "model",
        "prompts": pset.source, "num_prompts": len(pset), "num_neutral_prompts": len(neutral),
        "num_gendered_prompts": len(gendered), "metrics": list(metrics),
        "settings": {"num_samples": num_samples, "max_new_tokens": max_new_tokens, "do_sample": do_sample,
                     "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
                     "max_prompts_per_group": max_prompts_per_group},
    }

    # ---- co-occurrence bias (one forward pass a batch, no sampling) ---------------------------------
    report["cooccurrence_bias_mean_abs"] = report["cooccurrence_bias_mean"] = None
    report["cooccurrence_share_correlation"] = None
    if "cooccurrence" in metrics:
        if neutral:
            scores = map_sharded([p.text for p in neutral], lambda texts, _: cooccurrence_by_prompt(
                model, tokenizer, texts, batch_size, progress).tolist(), rank, world)
            per_group = defaultdict(list)
            for p, s in zip(neutral, scores):
                per_group[p.group].append(s)
            for g, vals in per_group.items():
                rows[g]["cooccurrence_bias"] = sum(vals) / len(vals)
            biases = [rows[g]["cooccurrence_bias"] for g in groups]
            report["cooccurrence_bias_mean_abs"] = M.mean_abs(biases)
            report["cooccurrence_bias_mean"] = M.mean(biases)
            report["cooccurrence_share_correlation"] = M.pearson(
                [rows[g]["female_share"] for g in groups], biases)
        else:
            notes.append("co-occurrence bias: not computed (no gender-neutral prompts)")
    else:
        notes.append(f"co-occurrence bias: {NOT_REQUESTED}")

    # ---- generation-based metrics -------------------------------------------------------------------
    gen_prompts = []
    if "parity" in metrics:
        gen_prompts += neutral
    if "sentiment" in metrics or classifier is not None:
        gen_prompts += gendered
    gen_prompts = list(dict.fromkeys(gen_prompts))
    generations = []
    if gen_prompts:
        outs = map_sharded([p.text for p in gen_prompts], lambda texts, ids: generate_continuations(
            model, tokenizer, texts, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, batch_size=batch_size,
            progress=progress, prompt_ids=ids), rank, world)
        for p, texts in zip(gen_prompts, outs):
            for t in texts:
                generations.append({"prompt": p.text, "group": p.group, "gender": p.gender, "text": t,
                                    "polarity": M.gender_polarity(t)})
    report["generations"] = generations

    report["mean_parity"] = report["min_parity"] = None
    if "parity" in metrics:
        if neutral:
            for gen in generations:
                if gen["gender"] is None:
                    rows[gen["group"]][f"n_{gen['polarity']}"] += 1
            for row in rows.values():
                row["parity"] = M.parity(row["n_male"], row["n_female"])
            report["mean_parity"], report["min_parity"] = M.parity_summary(r["parity"] for r in rows.values())
            undefined = sum(r["parity"] is None for r in rows.values())
            if undefined:
                notes.append(f"parity: undefined for {undefined} of {len(rows)} groups (no gendered word in any "
                             "continuation); mean/min ignore them")
        else:
            notes.append("parity: not computed (no gender-neutral prompts)")
    else:
        notes.append(f"parity: {NOT_REQUESTED}")

    report["sentiment_gap"] = None
    by_gender = {g: [x["text"] for x in generations if x["gender"] == g] for g in ("male", "female")}
    if "sentiment" in metrics:
        if by_gender["male"] and by_gender["female"]:
            scores = {g: M.sentiment_scores(t) for g, t in by_gender.items()}
            report["sentiment_gap"] = M.sentiment_gap(scores["male"], scores["female"])
            it = {g: iter(s) for g, s in scores.items()}
            for x in generations:
                if x["gender"] in it:
                    x["sentiment"] = next(it[x["gender"]])
        else:
            notes.append("sentiment gap: not computed (needs both male- and female-subject prompts)")
    else:
        notes.append(f"sentiment gap: {NOT_REQUESTED}")

    if classifier is None:
        report["classifier"] = NOT_COMPUTED
    elif not (by_gender["male"] or by_gender["female"]):
        report["classifier"] = "not computed (no gendered-subject prompts)"
    else:
        clf = load_classifier(classifier) if isinstance(classifier, str) else classifier
        report["classifier"] = {"model": classifier if isinstance(classifier, str) else type(clf).__name__,
                                **classify_by_gender(clf, by_gender, batch_size=batch_size)}

    report["per_profession"] = list(rows.values())
    report["notes"] = notes
    return report
