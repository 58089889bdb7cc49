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
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..builtin.tiny_models import train_tiny_teacher
from ..builtin.corpus import CorpusSpec, generate_corpus
from ..fairness.scoring import heldout_perplexity
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


def run_sweep(out: str, quick: bool = False, epsilons: list[float] | None = None) -> dict:
    from ..fairness.evaluator import evaluate_disparity
    from ..fairness.prompts import NEUTRAL_TEMPLATES, builtin_prompts
    from ..model_loading import load_causal_lm
    from ..outputs import PRIVACY_FILENAME, SWEEP_FILENAME, SWEEP_PLOT, check_output_dir
    from ..privacy.audit import canary_exposure, extract_canaries, membership_attacks, sequence_losses
    from ..privacy.canary import make_canary
    from ..distillation.train import run_training

    check_output_dir(out, "out", empty=True)  # before any work
    epsilons = epsilons or [1.0, 4.0, 8.0, math.inf]
    spec = SweepSpec.quick() if quick else SweepSpec()
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
    ref_members, ref_non = sequence_losses(teacher, tokenizer, members), sequence_losses(teacher, tokenizer, non_members)
    train_texts = private + [canary] * spec.canary_repeats
    prompts = builtin_prompts(list(DEMO_OCCUPATIONS))
    rows = []
    for crr in (False, True):
        for eps in epsilons:
            name = f"{'crr' if crr else 'kd'}_eps{_label(eps)}"
            print(f"Distilling '{name}' on {len(train_texts)} private records ({spec.canary_repeats} canary copies)",
                  flush=True)
            args = student_config(spec.demo, os.path.join(out, name), teacher_dir, "crr_dp")
            if not crr:
                args.cda, args.perturbation = "none", "none"
            if math.isinf(eps):
                args.dp_target_epsilon, args.dp_noise_multiplier = None, 0.0
            else:
                args.dp_target_epsilon = eps
            run_training(args, texts=train_texts)
            model = load_causal_lm(args.output_dir)
            lm, ln = sequence_losses(model, tokenizer, members), sequence_losses(model, tokenizer, non_members)
            attacks = membership_attacks(lm, ln, ref_members, ref_non)
            exposure = canary_exposure(model, tokenizer, canary, spec.num_candidates, seed=0)
            extraction = extract_canaries(model, tokenizer, [canary], spec.num_beams)[0]
            fair = evaluate_disparity(model, tokenizer, prompts, metrics=("cooccurrence",), model_name=name,
                                      progress=False)
            with open(os.path.join(args.output_dir, PRIVACY_FILENAME), encoding="utf-8") as fh:
                achieved = json.load(fh).get("epsilon")
            rows.append({"name": name, "crr": crr, "target_epsilon": None if math.isinf(eps) else eps,
                         "epsilon": achieved, "perplexity": heldout_perplexity(model, tokenizer, heldout),
                         "mia_loss_auc": attacks["loss_threshold"]["auc"],
                         "mia_loss_tpr_1pct": attacks["loss_threshold"]["tpr_at_1pct_fpr"],
                         "mia_ref_auc": attacks["reference_calibrated"]["auc"],
                         "mia_ref_tpr_1pct": attacks["reference_calibrated"]["tpr_at_1pct_fpr"],
                         "canary_exposure": exposure.exposure, "canary_max_exposure": exposure.max_exposure,
                         "canary_extracted_greedy": extraction["extracted_greedy"],
                         "canary_beam_rank": extraction["beam_rank"],
                         "canary_digits_greedy": extraction["digits_correct_greedy"],
                         "cooccurrence_bias": fair.get("cooccurrence_bias_mean_abs")})
    report = {"spec": asdict(spec), "epsilons": [_label(e) for e in epsilons], "canary": canary,
              "num_members": len(members), "num_non_members": len(non_members), "rows": rows,
              "runtime_seconds": round(time.time() - start, 1)}
    with open(os.path.join(out, SWEEP_FILENAME), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, allow_nan=False)
    plot_sweep(report, os.path.join(out, SWEEP_PLOT))
    print(format_sweep_table(report))
    print(f"Wrote {os.path.join(out, SWEEP_FILENAME)} and {os.path.join(out, SWEEP_PLOT)} in "
          f"{report['runtime_seconds']:.0f} s")
    return report


def format_sweep_table(report: dict) -> str:
    head = ("run", "eps", "ppl", "MIA loss AUC", "MIA ref AUC", "ref TPR@1%", "exposure", "extracted", "co-occ bias")
    rows = [head]
    for r in report["rows"]:
        eps = "inf" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        extracted = ("greedy" if r["canary_extracted_greedy"] else
                     f"beam {r['canary_beam_rank']}" if r["canary_beam_rank"] else f"no ({r['canary_digits_greedy']}/6)")
        rows.append((r["name"], eps, f"{r['perplexity']:.2f}", f"{r['mia_loss_auc']:.3f}", f"{r['mia_ref_auc']:.3f}",
                     f"{r['mia_ref_tpr_1pct']:.3f}", f"{r['canary_exposure']:.1f}/{r['canary_max_exposure']:.1f}",
                     extracted, f"{r['cooccurrence_bias']:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_sweep(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report["epsilons"]
    x = list(range(len(labels)))
    panels = (("perplexity", "Held-out perplexity (utility)"),
              (("mia_loss_auc", "mia_ref_auc"), "Membership inference AUC"),
              ("canary_exposure", "Canary exposure (bits)"),
              ("cooccurrence_bias", "Co-occurrence bias |mean| (fairness)"))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    for ax, (key, title) in zip(axes, panels):
        for crr, color in ((False, "#d62728"), (True, "#1f77b4")):
            rows = [r for r in report["rows"] if r["crr"] == crr]
            for k, style in zip(key if isinstance(key, tuple) else (key,), ("-o", "--s")):
                name = ("CRR" if crr else "KD") + ("" if isinstance(key, str) else
                                                   (" loss" if k == "mia_loss_auc" else " teacher-ref"))
                ax.plot(x, [r[k] for r in rows], style, color=color, label=name)
        if key == ("mia_loss_auc", "mia_ref_auc"):
            ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_xlabel("target epsilon (inf = clipping, no noise)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("Privacy-utility-fairness: one student at several epsilons, with and without CRR")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
