r"""Intrinsic bias: CEAT, the Contextualized Embedding Association Test (Guo & Caliskan, AIES 2021).

For target sets X (male terms), Y (female terms) and attribute sets A, B (e.g. career, family), each word
has many contextual embeddings, one per sentence context (``data/ceat_tests.json``: our own templates; the
model's ``hidden_states[layer]`` averaged over the word's tokens, :func:`~distill.fairness.scoring.span_embeddings`).
One *sample* draws one context for every word. On a sample (WEAT, Caliskan et al. 2017):

    s(w, A, B) = mean_{a∈A} cos(w, a) − mean_{b∈B} cos(w, b)
    ES_i = [mean_{x∈X} s(x, A, B) − mean_{y∈Y} s(y, A, B)] / std_{w∈X∪Y} s(w, A, B)      (std with ddof = 1)
    v_i  = std_{w∈X∪Y} s(w, A, B)²                                                       (in-sample variance)

N samples are combined by a random-effects model with the DerSimonian–Laird between-sample variance:

    w_i = 1 / v_i,  ES_fixed = Σ w_i ES_i / Σ w_i,  Q = Σ w_i (ES_i − ES_fixed)²,
    τ² = max(0, (Q − (N − 1)) / (Σ w_i − Σ w_i² / Σ w_i)),
    w*_i = 1 / (v_i + τ²),  CES = Σ w*_i ES_i / Σ w*_i,  SE = (Σ w*_i)^(-1/2),  z = CES / SE,

with the p-values ``p = 2·(1 − Φ(|z|))`` (two-sided) and ``p_one_sided = 1 − Φ(z)`` (CEAT's: is the
association stereotypical?). A is the attribute set stereotypically associated with men, so CES > 0 is the
stereotypical direction and CES = 0 no association; |CES| ≈ 0.2 / 0.5 / 0.8 reads as a small / medium / large
effect.

Sampling is *paired*: X[j] and Y[j] (a male word and its female partner) get the same context in a sample,
which removes the template-to-template variance from the X − Y difference. A model that is symmetric under
the gender permutation then scores exactly 0, and its role-reversed twin exactly −CES.
The N samples share words, so they are not independent: SE shrinks as N grows and the p-value is small for
any consistent association, however weak; read CES as the size and p only as its consistency.

No maintained library computes CEAT on a causal LM's hidden states (the authors' code is for BERT-era
encoders), hence this module; the statistics are NumPy-free torch one-liners tested against a direct reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import torch

from ..errors import DistillError
from .scoring import span_embeddings

DEFAULT_TESTS = ("career_family", "math_arts", "science_arts")


@lru_cache(maxsize=1)
def ceat_data() -> dict[str, Any]:
    """The packaged word sets and context templates (``distill/fairness/data/ceat_tests.json``)."""
    text = resources.files("distill.fairness").joinpath("data/ceat_tests.json").read_text(encoding="utf-8")
    return json.loads(text)


def builtin_test(name: str) -> dict[str, Any]:
    """``{"X", "Y", "A", "B", "templates_xy", "templates_ab"}`` of a packaged test, or ``occupations``
    (A: male-majority, B: female-majority occupations of ``distill/resources/occupations.tsv``)."""
    data = ceat_data()
    targets = data["targets"]
    if name == "occupations":
        return occupation_test()
    if name not in data["tests"]:
        raise DistillError(f"Unknown CEAT test '{name}': choose from {', '.join((*data['tests'], 'occupations'))}.")
    t = data["tests"][name]
    return {"X": targets["male"], "Y": targets["female"], "A": t["A"], "B": t["B"],
            "templates_xy": data["templates"][targets["templates"]], "templates_ab": data["templates"][t["templates"]]}


def occupation_test(occupations: Sequence[str] | None = None) -> dict[str, Any]:
    """Male terms / female terms against male-majority (A) / female-majority (B) occupations (U.S. labour
    statistics), over ``occupations`` (default: all with a known majority), balanced to equal sizes."""
    from ..occupations import load_occupations

    known = {o.name: o for o in load_occupations()}
    names = list(occupations) if occupations else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DistillError(f"Unknown occupation(s) {unknown}: choose from distill/resources/occupations.tsv.")
    male = [n for n in names if known[n].majority_gender == "male"]
    female = [n for n in names if known[n].majority_gender == "female"]
    k = min(len(male), len(female))
    if k < 1:
        raise DistillError("The CEAT occupations test needs at least one male-majority and one female-majority "
                           "occupation.")
    data = ceat_data()
    return {"X": data["targets"]["male"], "Y": data["targets"]["female"],
            "A": sorted(male, key=lambda n: known[n].female_share)[:k],
            "B": sorted(female, key=lambda n: -known[n].female_share)[:k],
            "templates_xy": data["templates"][data["targets"]["templates"]],
            "templates_ab": data["templates"]["occupation"]}


# ---- statistics (pure) -------------------------------------------------------------------------------

def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def association(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``s(w, A, B)`` for embeddings ``w [..., n, d]``, ``a [..., na, d]``, ``b [..., nb, d]`` → ``[..., n]``."""
    w, a, b = _unit(w.double()), _unit(a.double()), _unit(b.double())
    return (w @ a.transpose(-1, -2)).mean(-1) - (w @ b.transpose(-1, -2)).mean(-1)


def effect_size(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """WEAT effect size and its in-sample variance ``std²`` (batched over leading dims)."""
    sx, sy = association(x, a, b), association(y, a, b)
    std = torch.cat([sx, sy], dim=-1).std(dim=-1, correction=1)
    return (sx.mean(-1) - sy.mean(-1)) / std.clamp_min(1e-12), std ** 2


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def random_effects(es: Sequence[float] | torch.Tensor, variances: Sequence[float] | torch.Tensor) -> dict[str, Any]:
    """DerSimonian–Laird random-effects combination of effect sizes with within-sample variances."""
    es = torch.as_tensor(es, dtype=torch.float64)
    v = torch.as_tensor(variances, dtype=torch.float64).clamp_min(1e-24)
    n = es.numel()
    if n == 0:
        raise DistillError("CEAT needs at least one sample.")
    w = 1.0 / v
    fixed = float((w * es).sum() / w.sum())
    q = float((w * (es - fixed) ** 2).sum())
    c = float(w.sum() - (w ** 2).sum() / w.sum())
    tau2 = max(0.0, (q - (n - 1)) / c) if n > 1 and c > 0 else 0.0
    w_star = 1.0 / (v + tau2)
    ces = float((w_star * es).sum() / w_star.sum())
    se = float(w_star.sum() ** -0.5)
    z = ces / se if se > 0 else 0.0
    return {"effect_size": ces, "se": se, "z": z, "p_value": min(1.0, 2 * _normal_sf(abs(z))),
            "p_value_one_sided": _normal_sf(z), "tau2": tau2, "q": q, "fixed_effect_size": fixed,
            "num_samples": n}


def sample_contexts(n_words: dict[str, int], n_templates: dict[str, int], num_samples: int, seed: int
                    ) -> dict[str, torch.Tensor]:
    """Context index of every word in every sample, ``{set: LongTensor [N, n_words]}``; X and Y share theirs."""
    gen = torch.Generator().manual_seed(seed)
    draw = {k: torch.randint(n_templates[k], (num_samples, n_words[k]), generator=gen) for k in ("X", "A", "B")}
    if n_words["Y"] == n_words["X"] and n_templates["Y"] == n_templates["X"]:
        draw["Y"] = draw["X"]
    else:
        draw["Y"] = torch.randint(n_templates["Y"], (num_samples, n_words["Y"]), generator=gen)
    return draw


def ceat_from_embeddings(emb: dict[str, torch.Tensor], num_samples: int = 1000, seed: int = 0,
                         chunk: int = 256) -> dict[str, Any]:
    """CEAT from contextual embeddings ``{"X"|"Y"|"A"|"B": [n_words, n_contexts, d]}``: per-sample ES and
    variance, and their random-effects combination."""
    if num_samples < 1:
        raise DistillError(f"num_samples must be >= 1, got {num_samples}.")
    if len(emb["X"]) + len(emb["Y"]) < 3:
        raise DistillError("CEAT needs at least 3 target words in X and Y together.")
    draw = sample_contexts({k: v.shape[0] for k, v in emb.items()}, {k: v.shape[1] for k, v in emb.items()},
                           num_samples, seed)
    es, var = [], []
    for lo in range(0, num_samples, chunk):
        picked = {k: emb[k][torch.arange(emb[k].shape[0]), draw[k][lo:lo + chunk]] for k in emb}  # [n, words, d]
        e, v = effect_size(picked["X"], picked["Y"], picked["A"], picked["B"])
        es.append(e)
        var.append(v)
    es_t, var_t = torch.cat(es), torch.cat(var)
    return {**random_effects(es_t, var_t), "sample_effect_sizes_mean": float(es_t.mean()),
            "sample_effect_sizes_std": float(es_t.std()) if num_samples > 1 else 0.0}


# ---- on a model ---------------------------------------------------------------------------------------

def _pieces(words: Sequence[str], templates: Sequence[str]) -> list[tuple[str, str, str]]:
    out = []
    for word in words:
        for t in templates:
            if t.count("{w}") != 1:
                raise DistillError(f"CEAT template {t!r} must contain '{{w}}' exactly once.")
            left, right = t.split("{w}")
            if left and not left.endswith(" "):
                raise DistillError(f"CEAT template {t!r}: put a space before '{{w}}' (or start with it).")
            out.append((left.rstrip(" "), (" " if left else "") + word, right))
    return out


def contextual_embeddings(model, tokenizer, tests: dict[str, Any] | Sequence[dict[str, Any]], layer: int = -1,
                          batch_size: int = 64, progress: bool = False):
    """``{set: [n_words, n_templates, d]}`` for the four sets of a test (a list of tests: a list of such dicts),
    from one batched pass over the distinct (word, template) sentences."""
    many = not isinstance(tests, dict)
    specs = list(tests) if many else [tests]
    index: dict[tuple[str, str], int] = {}
    pieces: list[tuple[str, str, str]] = []
    layout = []
    for spec in specs:
        shapes = {}
        for key, tkey in (("X", "templates_xy"), ("Y", "templates_xy"), ("A", "templates_ab"), ("B", "templates_ab")):
            words, templates = spec[key], spec[tkey]
            if not words or not templates:
                raise DistillError(f"CEAT set {key} needs at least one word and one template.")
            rows = []
            for piece in _pieces(words, templates):
                if piece not in index:
                    index[piece] = len(pieces)
                    pieces.append(piece)
                rows.append(index[piece])
            shapes[key] = (rows, len(words), len(templates))
        layout.append(shapes)
    flat = span_embeddings(model, tokenizer, pieces, layer=layer, batch_size=batch_size, progress=progress,
                           desc="CEAT embeddings")
    out = [{k: flat[torch.tensor(rows)].reshape(nw, nt, -1) for k, (rows, nw, nt) in shapes.items()}
           for shapes in layout]
    return out if many else out[0]


def ceat(model, tokenizer, tests: Sequence[str | dict] = DEFAULT_TESTS, *, layer: int = -1,
         num_samples: int = 1000, seed: int = 0, batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
    """CEAT of ``model`` on each test (a builtin name or a dict with X, Y, A, B, templates_xy, templates_ab).

    Returns ``{"tests": {name: result}, "layer", "num_samples", "mean_effect_size", "mean_abs_effect_size"}``.
    """
    named = [(t, builtin_test(t)) if isinstance(t, str) else (t.get("name", f"test_{i}"), t)
             for i, t in enumerate(tests)]
    if not named:
        raise DistillError("CEAT needs at least one test.")
    embs = contextual_embeddings(model, tokenizer, [s for _, s in named], layer=layer, batch_size=batch_size,
                                 progress=progress)
    results = {}
    for (name, spec), emb in zip(named, embs):
        results[name] = {**ceat_from_embeddings(emb, num_samples=num_samples, seed=seed),
                         "sizes": {k: len(spec[k]) for k in "XYAB"}}
    values = [r["effect_size"] for r in results.values()]
    return {"tests": results, "layer": layer, "num_samples": num_samples, "seed": seed,
            "mean_effect_size": sum(values) / len(values),
            "mean_abs_effect_size": sum(abs(v) for v in values) / len(values)}


def ceat_inputs(test: str | dict = "career_family") -> dict[str, list[str]]:
    """Columns ``word`` and ``set`` (X, Y, A or B) of a test: the input of the ``ceat`` measurement."""
    spec = builtin_test(test) if isinstance(test, str) else test
    words, sets = [], []
    for key in "XYAB":
        words += list(spec[key])
        sets += [key] * len(spec[key])
    return {"word": words, "set": sets}
