"""`distill audit --sweep`: the privacy-utility-fairness curve of one student trained at several ε.

The same student (the demo's, :mod:`distill.demo.pipeline`) is distilled from the same *public* teacher on the
same *private* corpus at each ε of the list (``inf`` = DP-SGD with clipping but no noise, so only the noise
differs between points), with and without counterfactual role reversal (CRR), through the normal training entry
point (:func:`distill.distillation.train.run_training`). Each student is then measured on:

* utility — held-out perplexity;
* privacy in practice — membership inference on members (private records) vs non-members (held-out records of
  the same distribution): the loss-threshold attack and the reference-calibrated one with the teacher as the
  reference (AUC, TPR at 1 % FPR); a canary inserted ``k`` times: exposure and extraction (greedy, beam rank);
* fairness — the co-occurrence bias (mean |log p(female word) − log p(male word)| over occupations).

The teacher is trained on a *separate* corpus (another seed of the same generator), so it never saw the private
records or the canary: it is a public model and a fair reference for the calibrated attack.
Writes ``sweep.json`` and ``sweep.png`` into the output directory and prints a table.

Seeds (``seeds`` = N): each (ε, method) point is trained N times, with student seeds ``0..N-1`` (initialisation,
data order, CDA coin flips; the DP noise and Poisson sample are secret and differ on every run anyway). What does
not depend on the seed is built once: the corpora, the tokenizer, the public teacher and its reference losses.
Seed ``i`` of KD and seed ``i`` of CRR form a pair: "CRR lowers bias at ε" is backed by a one-sided paired t-test
over the seeds (:mod:`distill.fairness.statistics`), and each figure is reported as its mean with a 95 % Student t
interval. The runs of a sweep are independent: ``jobs`` worker processes train them side by side (one torch
thread each), which on a small CPU is faster than one process using every core for tiny matrices.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace

from ..errors import ConfigError
from ..outputs import PRIVACY_FILENAME, SWEEP_FILENAME, SWEEP_PLOT
from ..builtin.tiny_models import train_tiny_teacher
from ..builtin.corpus import CorpusSpec, generate_corpus
from ..fairness.prompts import NEUTRAL_TEMPLATES
from ..fairness.scoring import heldout_perplexity
from ..fairness.statistics import INTERVAL_METHOD, TEST_METHOD
from .pipeline import DEMO_OCCUPATIONS, DemoSpec, demo_tokenizer, student_config

CANARY_SEED = 20261126


@dataclass
class SweepSpec:
    private_documents: int = 1000
    heldout_documents: int = 300
    public_documents: int = 3000
    audit_records: int = 300
    canary_repeats: int = 8
    num_candidates: int = 1000
    num_beams: int = 10
    demo: DemoSpec = field(default_factory=lambda: DemoSpec(student_steps=200))

    @classmethod
    def quick(cls) -> "SweepSpec":
        demo = DemoSpec.quick()
        demo.student_steps = 120
        return cls(private_documents=400, heldout_documents=200, public_documents=2000, audit_records=200,
                   num_candidates=500, demo=demo)

    @classmethod
    def tiny(cls) -> "SweepSpec":
        """Seconds per run: for tests of the plumbing, not for reading figures."""
        demo = DemoSpec.quick()
        demo.teacher.steps, demo.student_steps, demo.dp_batch_size = 20, 3, 16
        return cls(private_documents=40, heldout_documents=30, public_documents=60, audit_records=20,
                   canary_repeats=2, num_candidates=15, num_beams=2, demo=demo)


#: The ε of a sweep: ``inf`` is clipping without noise. The quick sweep keeps the two ends and the demo's ε = 8.
DEFAULT_EPSILONS = "1,4,8,inf"
QUICK_EPSILONS = "1,8,inf"


def parse_epsilons(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--epsilons must be comma-separated numbers or inf, got '{text}'.") from None
    if not values or any(not (v > 0) for v in values):
        raise ConfigError(f"--epsilons must be > 0 (inf = no noise), got '{text}'.")
    return values


def _label(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def _run_name(crr: bool, eps: float, seed: int, n_seeds: int) -> str:
    name = f"{'crr' if crr else 'kd'}_eps{_label(eps)}"
    return name if n_seeds == 1 else f"{name}_seed{seed}"


_CONTEXT: dict = {}


def _init_worker(context: dict, threads: int | None) -> None:
    """Each worker process keeps the seed-independent context (texts, tokenizer, reference losses)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    _CONTEXT.clear()
    _CONTEXT.update(context)


def _train_and_audit(task: tuple) -> dict:
    """Train one (method, ε, seed) student on the private records and measure it: one row of the sweep."""
    from ..distillation.train import run_training
    from ..fairness.evaluator import evaluate_disparity
    from ..fairness.prompts import builtin_prompts
    from ..model_loading import load_causal_lm
    from ..privacy.audit import canary_exposure, extract_canaries, membership_attacks, sequence_losses

    name, crr, eps, seed, out_dir, sigma = task
    c = _CONTEXT
    spec: SweepSpec = c["spec"]
    tokenizer, canary = c["tokenizer"], c["canary"]
    print(f"Distilling '{name}' on {len(c['train_texts'])} private records ({spec.canary_repeats} canary copies)",
          flush=True)
    args = student_config(replace(spec.demo, seed=seed), out_dir, c["teacher_dir"], "crr_dp")
    # one log line at the end: each log computes ε with the accountant (seconds on a small CPU)
    args.disable_tqdm, args.logging_steps = True, spec.demo.student_steps
    if not crr:
        args.cda, args.perturbation = "none", "none"
    if math.isinf(eps):
        args.dp_target_epsilon, args.dp_noise_multiplier = None, 0.0
    else:  # σ calibrated once per ε for every seed; the target still stops training before ε is exceeded
        args.dp_target_epsilon, args.dp_noise_multiplier = eps, sigma
    run_training(args, texts=c["train_texts"])
    model = load_causal_lm(args.output_dir)
    lm, ln = sequence_losses(model, tokenizer, c["members"]), sequence_losses(model, tokenizer, c["non_members"])
    attacks = membership_attacks(lm, ln, c["ref_members"], c["ref_non_members"])
    exposure = canary_exposure(model, tokenizer, canary, spec.num_candidates, seed=0)
    extraction = extract_canaries(model, tokenizer, [canary], spec.num_beams)[0]
    fair = evaluate_disparity(model, tokenizer, builtin_prompts(list(DEMO_OCCUPATIONS)), metrics=("cooccurrence",),
                              model_name=name, progress=False)
    with open(os.path.join(args.output_dir, PRIVACY_FILENAME), encoding="utf-8") as fh:
        privacy = json.load(fh)
    return {"name": name, "crr": crr, "method": "crr" if crr else "kd", "seed": seed,
            "target_epsilon": None if math.isinf(eps) else eps, "epsilon": privacy.get("epsilon"),
            "noise_multiplier": privacy.get("noise_multiplier"),
            "perplexity": heldout_perplexity(model, tokenizer, c["heldout"]),
            "mia_loss_auc": attacks["loss_threshold"]["auc"],
            "mia_loss_tpr_1pct": attacks["loss_threshold"]["tpr_at_1pct_fpr"],
            "mia_ref_auc": attacks["reference_calibrated"]["auc"],
            "mia_ref_tpr_1pct": attacks["reference_calibrated"]["tpr_at_1pct_fpr"],
            "canary_exposure": exposure.exposure, "canary_max_exposure": exposure.max_exposure,
            "canary_extracted_greedy": extraction["extracted_greedy"],
            "canary_beam_rank": extraction["beam_rank"],
            "canary_digits_greedy": extraction["digits_correct_greedy"],
            "cooccurrence_bias": fair.get("cooccurrence_bias_mean_abs")}


#: The figures a point summarises over seeds: JSON name -> row field.
POINT_FIGURES = {"perplexity": "perplexity", "bias": "cooccurrence_bias", "mia_auc": "mia_ref_auc",
                 "mia_loss_auc": "mia_loss_auc", "exposure": "canary_exposure"}


def summarise_points(rows: list[dict], epsilons: list[float]) -> tuple[list[dict], list[dict]]:
    """Group the runs by (ε, method): each figure as ``{"mean", "ci95", "values"}`` over seeds; and, at each ε,
    the paired test of "CRR lowers bias" (CRR's seed i against KD's seed i)."""
    from ..fairness.statistics import compare, summary

    points, comparisons = [], []
    for eps in epsilons:
        target = None if math.isinf(eps) else eps
        by_method = {}
        for method in ("kd", "crr"):
            runs = sorted((r for r in rows if r["method"] == method and r["target_epsilon"] == target),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            by_method[method] = runs
            point = {"epsilon": target, "epsilon_label": _label(eps), "method": method, "n_seeds": len(runs),
                     "seeds": [r["seed"] for r in runs], "achieved_epsilon": runs[0]["epsilon"],
                     "noise_multiplier": runs[0].get("noise_multiplier")}
            for key, field_name in POINT_FIGURES.items():
                point[key] = summary([r[field_name] for r in runs])
            point["canary_extracted_greedy"] = sum(bool(r["canary_extracted_greedy"]) for r in runs)
            points.append(point)
        if set(by_method) == {"kd", "crr"}:
            kd = {r["seed"]: r["cooccurrence_bias"] for r in by_method["kd"]}
            crr = {r["seed"]: r["cooccurrence_bias"] for r in by_method["crr"]}
            seeds = sorted(set(kd) & set(crr))
            comparisons.append({"epsilon": target, "epsilon_label": _label(eps), "metric": "bias", "seeds": seeds,
                                **compare(f"CRR lowers bias vs KD at epsilon = {_label(eps)}",
                                          [crr[s] for s in seeds], [kd[s] for s in seeds])})
    return points, comparisons


def noise_multipliers(epsilons: list[float], num_records: int, batch_size: int, steps: int) -> dict[float, float]:
    """σ of each ε, as the DP engine calibrates it (Poisson rate ``batch / records``, default δ, RDP), once per ε
    for all seeds and methods: the search costs tens of accountant calls. ``inf`` -> 0 (no noise)."""
    from ..privacy.accounting import calibrate_noise, default_delta

    delta, q = default_delta(num_records), batch_size / num_records
    return {eps: 0.0 if math.isinf(eps) else calibrate_noise(eps, delta, q, steps) for eps in epsilons}


def default_jobs() -> int:
    """Worker processes of a sweep: one per core, at most 2 (tiny models; memory stays small)."""
    return max(1, min(2, os.cpu_count() or 1))


def run_sweep(out: str, quick: bool = False, epsilons: list[float] | None = None, seeds: int = 1,
              jobs: int | None = None, spec: SweepSpec | None = None) -> dict:
    """Train and audit every (ε, method, seed) run into ``out``; write ``sweep.json``, ``sweep.png``; return the
    report. Every process uses one torch thread (``jobs`` processes side by side)."""
    from ..outputs import check_output_dir

    check_output_dir(out, "output_dir", empty=True)  # before any work
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}.")
    epsilons = epsilons or parse_epsilons(QUICK_EPSILONS if quick else DEFAULT_EPSILONS)
    spec = spec or (SweepSpec.quick() if quick else SweepSpec())
    seed_list = [spec.demo.seed + i for i in range(seeds)]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread barely helps, and under load OpenMP spin-waits (17x slower)
    try:
        return _sweep(out, epsilons, seeds, seed_list, jobs, spec)
    finally:
        torch.set_num_threads(threads)


def _sweep(out: str, epsilons: list[float], seeds: int, seed_list: list[int], jobs: int | None,
           spec: SweepSpec) -> dict:
    from ..model_loading import load_causal_lm
    from ..privacy.audit import sequence_losses
    from ..privacy.canary import make_canary

    start = time.time()
    os.makedirs(out, exist_ok=True)
    corpus = dict(skew=spec.demo.skew, occupations=DEMO_OCCUPATIONS, holdout_prompts=NEUTRAL_TEMPLATES)
    public = generate_corpus(CorpusSpec(num_documents=spec.public_documents, seed=7, **corpus))
    private = generate_corpus(CorpusSpec(num_documents=spec.private_documents, seed=11, **corpus))
    heldout = generate_corpus(CorpusSpec(num_documents=spec.heldout_documents, seed=13, **corpus))
    canary = make_canary(CANARY_SEED)
    digits = [f"my secret number is {d}" for d in range(10)]
    tokenizer = demo_tokenizer(public + private + heldout + digits + [canary])
    rng = random.Random(0)
    members = rng.sample(private, min(spec.audit_records, len(private)))
    non_members = heldout[:spec.audit_records]
    teacher_dir = os.path.join(out, "teacher")
    print(f"Training the public teacher on {len(public)} documents (a corpus disjoint from the private one)", flush=True)
    train_tiny_teacher(teacher_dir, spec.demo.teacher, texts=public, tokenizer=tokenizer)
    teacher = load_causal_lm(teacher_dir)
    context = {"spec": spec, "tokenizer": tokenizer, "canary": canary, "teacher_dir": teacher_dir,
               "train_texts": private + [canary] * spec.canary_repeats, "members": members,
               "non_members": non_members, "heldout": heldout,
               "ref_members": sequence_losses(teacher, tokenizer, members),
               "ref_non_members": sequence_losses(teacher, tokenizer, non_members)}
    del teacher
    sigmas = noise_multipliers(epsilons, len(context["train_texts"]), spec.demo.dp_batch_size, spec.demo.student_steps)
    tasks = [(_run_name(crr, eps, s, seeds), crr, eps, s, os.path.join(out, _run_name(crr, eps, s, seeds)),
              sigmas[eps]) for s in seed_list for crr in (False, True) for eps in epsilons]
    jobs = max(1, min(jobs or default_jobs(), len(tasks)))
    print(f"{len(tasks)} runs ({len(epsilons)} epsilons x 2 methods x {seeds} seed{'s' if seeds > 1 else ''}) "
          f"in {jobs} process{'es' if jobs > 1 else ''}", flush=True)
    if jobs == 1:
        saved = dict(_CONTEXT)
        _init_worker(context, None)
        try:
            rows = [_train_and_audit(t) for t in tasks]
        finally:
            _CONTEXT.clear()
            _CONTEXT.update(saved)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(context, 1)) as pool:
            rows = list(pool.map(_train_and_audit, tasks))
    points, comparisons = summarise_points(rows, epsilons)
    report = {"spec": asdict(spec), "epsilons": [_label(e) for e in epsilons], "seeds": seed_list,
              "interval": INTERVAL_METHOD, "test": TEST_METHOD, "canary": canary,
              "num_members": len(members), "num_non_members": len(non_members), "points": points,
              "comparisons": comparisons, "rows": rows, "jobs": jobs,
              "runtime_seconds": round(time.time() - start, 1)}
    with open(os.path.join(out, SWEEP_FILENAME), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, allow_nan=False)
    plot_sweep(report, os.path.join(out, SWEEP_PLOT))
    print(format_sweep_table(report))
    print(f"Wrote {os.path.join(out, SWEEP_FILENAME)} and {os.path.join(out, SWEEP_PLOT)} in "
          f"{report['runtime_seconds']:.0f} s")
    return report


def format_sweep_table(report: dict) -> str:
    """One line per (ε, method): each figure as mean [95 % t interval over seeds]; then the paired tests."""
    from ..fairness.statistics import format_interval

    head = ("method", "target eps", "eps", "seeds", "ppl", "MIA ref AUC", "MIA loss AUC", "exposure",
            "extracted", "co-occ bias")
    rows = [head]
    for p in report["points"]:
        eps = "inf" if p["achieved_epsilon"] is None else f"{p['achieved_epsilon']:.2f}"
        rows.append((p["method"], p["epsilon_label"], eps, str(p["n_seeds"]), format_interval(p["perplexity"], ".2f"),
                     format_interval(p["mia_auc"]), format_interval(p["mia_loss_auc"]),
                     format_interval(p["exposure"], ".1f"), f"{p['canary_extracted_greedy']}/{p['n_seeds']}",
                     format_interval(p["bias"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"mean [{report.get('interval', INTERVAL_METHOD)}]; extracted = seeds whose greedy decoding "
                 "emits the canary")
    for c in report.get("comparisons", []):
        lines.append(f"{c['claim']}: {c['verdict']}; mean difference {c['mean_difference']:+.3f} "
                     f"({TEST_METHOD})")
    return "\n".join(lines)


def plot_sweep(report: dict, path: str) -> None:
    """Four panels against ε, one line per method, each point the mean over seeds with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report["epsilons"]
    x = list(range(len(labels)))
    panels = (("perplexity", "Held-out perplexity (utility)"),
              (("mia_auc", "mia_loss_auc"), "Membership inference AUC"),
              ("exposure", "Canary exposure (bits)"),
              ("bias", "Co-occurrence bias |mean| (fairness)"))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    for ax, (key, title) in zip(axes, panels):
        for method, color, offset in (("kd", "#d62728", -0.04), ("crr", "#1f77b4", 0.04)):
            pts = {p["epsilon_label"]: p for p in report["points"] if p["method"] == method}
            xs = [i + offset for i, lab in zip(x, labels) if lab in pts]
            for k, style in zip(key if isinstance(key, tuple) else (key,), ("-o", "--s")):
                name = method.upper() + ("" if isinstance(key, str) else
                                         (" teacher-ref" if k == "mia_auc" else " loss"))
                stats = [pts[lab][k] for lab in labels if lab in pts]
                means = [s["mean"] for s in stats]
                err = [[s["mean"] - s["ci95"][0] if s["ci95"] else 0.0 for s in stats],
                       [s["ci95"][1] - s["mean"] if s["ci95"] else 0.0 for s in stats]]
                ax.errorbar(xs, means, yerr=err, fmt=style, color=color, label=name, capsize=3)
        if key == ("mia_auc", "mia_loss_auc"):
            ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_xlabel("target epsilon (inf = clipping, no noise)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    n = max((p["n_seeds"] for p in report["points"]), default=1)
    fig.suptitle("Privacy-utility-fairness: one student at several epsilons, with and without CRR "
                 f"(mean over {n} seed{'s' if n > 1 else ''}" + (", 95 % t interval)" if n > 1 else ")"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
