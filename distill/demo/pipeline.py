"""`distill demo`: bias mitigation end to end, offline, on a teacher with a planted gender bias.

1. Generate a corpus in which each occupation co-occurs with one gender at a known skew
   (:mod:`distill.builtin.corpus`), with GPT-2's real tokenizer.
2. Train a small GPT-2 teacher on it: it learns the planted bias.
3. Distil three students with the same budget through the public API (:func:`distill.distillation.train.run_training`):
   ``kd`` (plain), ``crr`` (counterfactual data augmentation + teacher-prediction perturbation) and
   ``crr_dp`` (CRR + DP-SGD at a stated epsilon).
4. Evaluate all four with :mod:`distill.fairness` on held-out prompts (generation metrics), CEAT on the
   occupations (intrinsic), pronoun resolution and minimal pairs (downstream), prediction sensitivity, and
   held-out perplexity.
5. Print a table; write ``demo_report.json``, ``demo.png`` and each model's fairness report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from ..distillation.config import DistillationConfig
from ..errors import ConfigError
from ..builtin.tiny_models import TinyTeacherSpec, train_tiny_teacher
from ..builtin.corpus import CorpusSpec, generate_corpus, planted_gender
from ..builtin.vocab import restricted_gpt2_tokenizer
from ..fairness.scoring import heldout_perplexity
from ..fairness.statistics import INTERVAL_METHOD, TEST_METHOD, format_interval
from ..outputs import DEMO_PLOT, DEMO_REPORT_FILENAME, PRIVACY_FILENAME

VARIANTS = ("teacher", "kd", "crr", "crr_dp")
#: The demo's occupations: eight with a female and eight with a male real-world majority.
DEMO_OCCUPATIONS = ("nurse", "secretary", "receptionist", "hairdresser", "librarian", "dental hygienist", "nanny",
                    "dietitian", "carpenter", "electrician", "plumber", "mechanic", "firefighter", "pilot",
                    "truck driver", "construction worker")


@dataclass
class DemoSpec:
    """Sizes of a demo run. ``quick()`` is the < 2 minute version used by tests."""

    num_documents: int = 4000
    heldout_documents: int = 400
    skew: float = 0.9
    teacher: TinyTeacherSpec = field(default_factory=lambda: TinyTeacherSpec(
        n_layer=2, n_embd=64, n_head=4, n_positions=64, steps=700, batch_size=32, block_size=48,
        learning_rate=8e-3, packing=False))
    student_layers: int = 1
    student_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 5e-3
    dp_target_epsilon: float = 8.0
    dp_batch_size: int = 64
    dp_learning_rate: float = 1e-2
    num_samples: int = 2
    max_new_tokens: int = 12
    seed: int = 0

    @classmethod
    def quick(cls, seed: int = 0) -> "DemoSpec":
        return cls(num_documents=2000, heldout_documents=200,
                   teacher=TinyTeacherSpec(n_layer=2, n_embd=64, n_head=4, n_positions=64, steps=300, batch_size=32,
                                           block_size=48, learning_rate=8e-3, packing=False),
                   student_steps=80, num_samples=1, max_new_tokens=8, seed=seed)


def student_config(spec: DemoSpec, out_dir: str, teacher_dir: str, variant: str) -> DistillationConfig:
    """The training config of one demo student: the same budget for all, only CRR/DP settings differ."""
    kw = dict(
        output_dir=out_dir, teacher_model_name_or_path=teacher_dir, student_num_layers=spec.student_layers,
        block_size=spec.teacher.block_size, packing=False, validation_split_percentage=0,
        max_steps=spec.student_steps, per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate, warmup_steps=max(1, spec.student_steps // 20),
        lr_scheduler_type="cosine", temperature=2.0, alpha_kd=1.0, alpha_lm=1.0, logging_steps=10,
        save_strategy="no", eval_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        seed=spec.seed, disable_tqdm=False,
    )
    if variant in ("crr", "crr_dp"):
        kw.update(cda="two_sided", perturbation="mean")
    if variant == "crr_dp":
        kw.update(dp_enabled=True, dp_target_epsilon=spec.dp_target_epsilon, dp_max_grad_norm=1.0,
                  per_device_train_batch_size=spec.dp_batch_size, learning_rate=spec.dp_learning_rate,
                  lr_scheduler_type="constant_with_warmup")
    return DistillationConfig(**kw)


def demo_tokenizer(texts: list[str]):
    """GPT-2's BPE restricted to what the demo's corpus, prompts and gendered lexicon need."""
    from ..counterfactual.lexicon import load_lexicon
    from ..fairness.lexicon import FEMALE_NEXT_WORDS, MALE_NEXT_WORDS
    from ..fairness.prompts import builtin_prompts

    words = [w for pair in load_lexicon().pairs for w in pair] + list(MALE_NEXT_WORDS) + list(FEMALE_NEXT_WORDS)
    forms = [f" {w}" for w in words] + [f" {w.capitalize()}" for w in words] + [w.capitalize() for w in words]
    prompts = [p.text for p in builtin_prompts(list(DEMO_OCCUPATIONS)).prompts]
    return restricted_gpt2_tokenizer(list(texts) + prompts + forms)


def _check_out_dir(out: str) -> None:
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"{out} exists and is not empty: choose a new --out directory (nothing was changed).")


def run_demo(out: str, quick: bool = False, seed: int = 0, seeds: int = 1, spec: DemoSpec | None = None,
             architecture: str | None = None) -> dict:
    """Run the demo into ``out`` and return the report (also written to ``out/demo_report.json``).

    ``seeds`` > 1 trains each student with seeds ``seed, seed+1, ...`` (one shared corpus and teacher: the
    comparison is between distillation methods) into ``out/VARIANT_seedS``; the report then gives each student's
    figures as means over seeds, its bias and perplexity with a 95 % Student t interval, and a one-sided paired
    t-test (seed i against seed i) of each bias comparison with KD. ``architecture`` (``gpt2`` or ``llama``)
    replaces the teacher's architecture (the students are built from its layers, so they share it).
    """
    from ..fairness.prompts import NEUTRAL_TEMPLATES, builtin_prompts
    from ..distillation.train import run_training
    from ..fairness.statistics import INTERVAL_METHOD

    _check_out_dir(out)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}.")
    spec = spec or (DemoSpec.quick(seed) if quick else DemoSpec(seed=seed))
    if architecture is not None:
        spec = replace(spec, teacher=replace(spec.teacher, architecture=architecture))
    seed_list = [spec.seed + i for i in range(seeds)]
    start = time.time()
    os.makedirs(out, exist_ok=True)
    corpus = dict(skew=spec.skew, occupations=DEMO_OCCUPATIONS, holdout_prompts=NEUTRAL_TEMPLATES)
    texts = generate_corpus(CorpusSpec(num_documents=spec.num_documents, seed=spec.seed, **corpus))
    heldout = generate_corpus(CorpusSpec(num_documents=spec.heldout_documents, seed=spec.seed + 1000, **corpus))
    tokenizer = demo_tokenizer(texts + heldout)
    teacher_dir = os.path.join(out, "teacher")
    print(f"[1/3] Training the {spec.teacher.architecture} teacher on {len(texts)} documents with a planted {spec.skew:.0%}/{1 - spec.skew:.0%} "
          f"occupation-gender skew (GPT-2's BPE restricted to the {len(tokenizer)} tokens the demo needs)", flush=True)
    train_tiny_teacher(teacher_dir, spec.teacher, texts=texts, tokenizer=tokenizer)
    prompts = builtin_prompts(list(DEMO_OCCUPATIONS))
    planted = {occ: planted_gender(occ) for occ in DEMO_OCCUPATIONS}
    report: dict = {"spec": asdict(spec), "occupations": list(DEMO_OCCUPATIONS), "planted_gender": planted,
                    "variants": {}}
    per_seed: dict[str, list[dict]] = {v: [] for v in VARIANTS[1:]}
    for i, s in enumerate(seed_list):
        dirs = {"teacher": teacher_dir} if i == 0 else {}
        for variant in VARIANTS[1:]:
            print(f"[2/3] Distilling the '{variant}' student" + (f" (seed {s})" if seeds > 1 else ""), flush=True)
            name = variant if seeds == 1 else f"{variant}_seed{s}"
            args = student_config(replace(spec, seed=s), os.path.join(out, name), teacher_dir, variant)
            run_training(args, texts=texts)
            dirs[variant] = args.output_dir
        print("[3/3] Evaluating gender disparity (held-out templates) and held-out perplexity"
              + (f" (seed {s})" if seeds > 1 else ""), flush=True)
        for variant, path in dirs.items():
            figures = measure_model(path, variant, tokenizer, prompts, heldout, planted, spec, s)
            if variant == "teacher":
                report["variants"]["teacher"] = figures
            else:
                per_seed[variant].append(figures)
    for variant, runs in per_seed.items():
        report["variants"][variant] = runs[0] if seeds == 1 else seed_figures(runs, seed_list)
    report["n_seeds"], report["seeds"], report["interval"] = seeds, seed_list, INTERVAL_METHOD
    if seeds > 1:
        report["per_seed"] = {v: [{k: x for k, x in r.items() if k != "per_profession"} for r in runs]
                              for v, runs in per_seed.items()}
    report["comparisons"] = bias_comparisons(per_seed)
    report["runtime_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(out, DEMO_REPORT_FILENAME), "w") as fh:
        json.dump(report, fh, indent=2)
    plot_demo(report, os.path.join(out, DEMO_PLOT))
    print(format_demo_table(report))
    print(f"Wrote {os.path.join(out, DEMO_REPORT_FILENAME)} and {os.path.join(out, DEMO_PLOT)} "
          f"in {report['runtime_seconds']:.0f} s")
    return report


def measure_model(path: str, variant: str, tokenizer, prompts, heldout: list[str], planted: dict, spec: DemoSpec,
                  seed: int) -> dict:
    """Evaluate one model of the demo (fairness suite, perplexity); writes its fairness report and model card."""
    from ..fairness.report import write_report
    from ..fairness.suite import evaluate_suite
    from ..hub import write_model_card
    from ..model_loading import load_causal_lm

    model = load_causal_lm(path)
    fair = evaluate_suite(model, tokenizer, "all", prompts, occupations=DEMO_OCCUPATIONS,
                          metrics=("cooccurrence", "parity", "sentiment"), ceat_tests=("occupations",),
                          num_samples=spec.num_samples, max_new_tokens=spec.max_new_tokens, seed=seed,
                          model_name=f"demo/{variant}", progress=False)
    write_report(fair, path)
    if variant != "teacher":
        write_model_card(path)  # now with the fairness results
    per_profession = {r["profession"]: r.get("cooccurrence_bias") for r in fair.get("per_profession", [])}
    return {
        "perplexity": heldout_perplexity(model, tokenizer, heldout),
        "cooccurrence_bias_mean_abs": fair.get("cooccurrence_bias_mean_abs"),
        "cooccurrence_bias_mean": fair.get("cooccurrence_bias_mean"),
        "mean_parity": fair.get("mean_parity"),
        "min_parity": fair.get("min_parity"),
        "sentiment_gap": (fair.get("sentiment_gap") or {}).get("gap"),
        "epsilon": _epsilon(path),
        **family_figures(fair),
        **planted_direction(per_profession, planted),
        "per_profession": per_profession,
    }


#: The figures the demo reports with an interval over seeds.
INTERVAL_FIGURES = ("perplexity", "cooccurrence_bias_mean_abs")
#: The demo's comparisons: "A lowers the co-occurrence bias vs B" (A's seed i against B's seed i).
COMPARISONS = (("crr", "kd", "CRR lowers bias vs KD"), ("crr_dp", "kd", "CRR + DP lowers bias vs KD"))


def mean_figures(runs: list):
    """The mean over seeds of each number (recursively in dicts and lists); None where any seed has none."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: mean_figures([r.get(k) for r in runs]) for k in first}
    if isinstance(first, list):
        return [mean_figures([r[j] for r in runs]) for j in range(len(first))]
    if any(v is None or isinstance(v, bool) or not isinstance(v, (int, float)) for v in runs):
        return None if any(v is None for v in runs) else first
    return sum(runs) / len(runs)


def seed_figures(runs: list[dict], seeds: list[int]) -> dict:
    """A student's figures over seeds: the means, and ``seeds`` with the intervals of :data:`INTERVAL_FIGURES`."""
    from ..fairness.statistics import summary

    figures = mean_figures(runs)
    figures["seeds"] = {"n_seeds": len(runs), "seeds": list(seeds),
                        **{k: summary([r[k] for r in runs]) for k in INTERVAL_FIGURES
                           if all(r.get(k) is not None for r in runs)}}
    return figures


def bias_comparisons(per_seed: dict[str, list[dict]]) -> list[dict]:
    """The paired one-sided t-tests of :data:`COMPARISONS` on the co-occurrence bias."""
    from ..fairness.statistics import compare

    out = []
    for a, b, claim in COMPARISONS:
        xa = [r["cooccurrence_bias_mean_abs"] for r in per_seed.get(a, [])]
        xb = [r["cooccurrence_bias_mean_abs"] for r in per_seed.get(b, [])]
        if xa and len(xa) == len(xb) and None not in xa + xb:
            out.append({"metric": "cooccurrence_bias_mean_abs", "a": a, "b": b, **compare(claim, xa, xb)})
    return out


def planted_direction(per_profession: dict[str, float | None], planted: dict[str, str]) -> dict:
    """How much of a model's co-occurrence bias points the way the corpus planted it.

    ``planted_direction_bias``: the mean over occupations of the bias signed so that positive means "towards the
    planted gender" (bias > 0 means a female word is expected next); ``planted_direction_agreement``: the share
    of occupations whose bias has the planted sign.
    """
    signed = [(1.0 if planted[occ] == "female" else -1.0) * bias
              for occ, bias in per_profession.items() if bias is not None and occ in planted]
    if not signed:
        return {"planted_direction_bias": None, "planted_direction_agreement": None}
    return {"planted_direction_bias": sum(signed) / len(signed),
            "planted_direction_agreement": sum(b > 0 for b in signed) / len(signed)}


def family_figures(fair: dict) -> dict:
    """The demo's intrinsic, downstream and sensitivity columns from a suite report."""
    from ..fairness.suite import headline

    head = headline(fair)
    pr = (fair.get("downstream") or {}).get("pronoun_resolution") or {}
    mp = (fair.get("downstream") or {}).get("minimal_pairs") or {}
    ceat_r = ((fair.get("intrinsic") or {}).get("ceat") or {}).get("tests", {}).get("occupations") or {}
    return {"ceat_effect_size": head["ceat_effect_size"], "ceat_p_value": ceat_r.get("p_value"),
            "pronoun_gap": head["pronoun_gap"], "pronoun_stereotype_preference": pr.get("stereotype_preference"),
            "minimal_pairs_stereotype_share": head["stereotype_share"],
            "minimal_pairs_ci": [mp.get("ci_low"), mp.get("ci_high")],
            "prediction_sensitivity": head["prediction_sensitivity"],
            "representation_tvd": head["representation_tvd"], "association_tvd": head["association_tvd"]}


def _epsilon(path: str) -> float | None:
    privacy = os.path.join(path, PRIVACY_FILENAME)
    if not os.path.isfile(privacy):
        return None
    with open(privacy) as fh:
        return json.load(fh).get("epsilon")


def _f(value, spec=".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_demo_table(report: dict) -> str:
    rows = [("model", "perplexity", "co-occ. bias |mean|", "towards planted", "mean parity", "sentiment gap",
             "CEAT ES", "pred. sens.", "pronoun gap", "stereo pairs", "epsilon")]
    for name, v in report["variants"].items():
        agree = v.get("planted_direction_agreement")
        towards = "-" if agree is None else f"{v['planted_direction_bias']:+.3f} ({agree:.0%})"
        share = v.get("minimal_pairs_stereotype_share")
        over = v.get("seeds") or {}
        ppl = format_interval(over["perplexity"], ".2f") if "perplexity" in over else _f(v["perplexity"], ".2f")
        bias = (format_interval(over["cooccurrence_bias_mean_abs"]) if "cooccurrence_bias_mean_abs" in over
                else _f(v["cooccurrence_bias_mean_abs"]))
        rows.append((name, ppl, bias, towards,
                     _f(v["mean_parity"]), _f(v["sentiment_gap"], "+.3f"), _f(v.get("ceat_effect_size"), "+.3f"),
                     _f(v.get("prediction_sensitivity")), _f(v.get("pronoun_gap"), "+.3f"),
                     "-" if share is None else f"{share:.0%}", _f(v["epsilon"], ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = report.get("n_seeds", 1)
    if n > 1:
        lines.append(f"Students: mean over {n} seeds {report.get('seeds')}; perplexity and bias as mean "
                     f"[{report.get('interval', INTERVAL_METHOD)}]; the teacher is one model.")
    for c in report.get("comparisons", []):
        lines.append(f"{c['claim']}: {c['verdict']}; mean difference {c['mean_difference']:+.3f} ({TEST_METHOD})")
    return "\n".join(lines)


def plot_demo(report: dict, path: str) -> None:
    """Per-profession co-occurrence bias by model, then one bar panel a figure: mean |bias| (generation), CEAT
    effect size (intrinsic), share of minimal pairs preferring the stereotype (downstream), perplexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(report["variants"])
    colors = {"teacher": "#444444", "kd": "#d62728", "crr": "#2ca02c", "crr_dp": "#1f77b4"}
    fig, axes = plt.subplots(1, 5, figsize=(22, 5.5), gridspec_kw={"width_ratios": [3, 1, 1, 1, 1]})
    occs = report["occupations"]
    width = 0.8 / len(variants)
    for i, name in enumerate(variants):
        per = report["variants"][name]["per_profession"]
        axes[0].bar([j + i * width for j in range(len(occs))], [per.get(o) or 0.0 for o in occs], width,
                    label=name, color=colors.get(name))
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(occs))])
    axes[0].set_xticklabels(occs, rotation=60, ha="right", fontsize=8)
    axes[0].set_ylabel("log p(female next word) - log p(male next word)")
    axes[0].set_title("Co-occurrence bias per occupation (held-out prompts)")
    axes[0].legend()
    for ax, key, title, fair in (
            (axes[1], "cooccurrence_bias_mean_abs", "Mean |co-occurrence bias|\n(generation; 0 is fair)", 0.0),
            (axes[2], "ceat_effect_size", "CEAT effect size, occupations\n(intrinsic; 0 is fair)", 0.0),
            (axes[3], "minimal_pairs_stereotype_share", "Minimal pairs preferring\nthe stereotype (0.5 is fair)", 0.5),
            (axes[4], "perplexity", "Held-out perplexity\n(lower is better)", None)):
        vals = [report["variants"][n].get(key) or 0.0 for n in variants]
        cis = [((report["variants"][n].get("seeds") or {}).get(key) or {}).get("ci95") for n in variants]
        err = [[v - ci[0] if ci else 0.0 for v, ci in zip(vals, cis)], [ci[1] - v if ci else 0.0 for v, ci in zip(vals, cis)]]
        ax.bar(variants, vals, color=[colors.get(n) for n in variants], yerr=err if any(cis) else None, capsize=4)
        if fair is not None:
            ax.axhline(fair, color="black", linewidth=0.8)
        for j, v in enumerate(vals):
            ax.text(j, v, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
        ax.set_title(title)
    eps = report["variants"].get("crr_dp", {}).get("epsilon")
    n = report.get("n_seeds", 1)
    fig.suptitle("fair-distill demo: planted-bias teacher, plain KD, counterfactual role reversal (CRR), CRR + DP"
                 + (f" (epsilon = {eps:.1f})" if eps else "")
                 + (f"; students: mean over {n} seeds, error bars 95 % t interval" if n > 1 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
