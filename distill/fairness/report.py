"""Writing a fairness report: ``fairness.json``, ``per_profession.csv``, ``disparity.png``,
``generations.jsonl``, and a plain-text table for the terminal; for several models or metric families, one
comparison table (rows: models, columns: the headline figure of each family) and one plot
(:func:`format_suite_table`, :func:`plot_suite`)."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from ..outputs import (DISPARITY_PLOT, FAIRNESS_FILENAME, GENERATIONS_FILENAME, PER_PROFESSION_FILENAME, RUN_ID_KEY,
                       read_run_id)

CSV_COLUMNS = ("profession", "female_share", "cooccurrence_bias", "parity", "n_male", "n_female", "n_neutral",
               "num_prompts")


def _fmt(value, spec: str = "+.3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_table(report: dict[str, Any], max_rows: int | None = None) -> str:
    """A readable summary and per-profession table (rows sorted by co-occurrence bias)."""
    lines = [f"Fairness report: {report['model']}  (prompts: {report['prompts']}, {report['num_prompts']} prompts)"]
    rows = sorted(report["per_profession"], key=lambda r: (r["cooccurrence_bias"] is None,
                                                           r["cooccurrence_bias"] or 0.0))
    if max_rows is not None and len(rows) > max_rows:
        rows = rows[:max_rows // 2] + [None] + rows[-(max_rows - max_rows // 2):]
    width = max([len("profession")] + [len(r["profession"]) for r in rows if r]) + 2
    lines.append("")
    lines.append(f"{'profession':<{width}}{'women %':>8}{'co-occ bias':>13}{'parity':>8}{'M/F/N':>12}")
    lines.append("-" * (width + 41))
    for r in rows:
        if r is None:
            lines.append(f"{'...':<{width}}")
            continue
        share = "-" if r["female_share"] is None else f"{r['female_share']:.0f}"
        counts = f"{r['n_male']}/{r['n_female']}/{r['n_neutral']}" if r["parity"] is not None or r["n_neutral"] \
            else "-"
        lines.append(f"{r['profession']:<{width}}{share:>8}{_fmt(r['cooccurrence_bias']):>13}"
                     f"{_fmt(r['parity'], '.2f'):>8}{counts:>12}")
    lines.append("")
    gap = report.get("sentiment_gap")
    summary = [
        ("co-occurrence bias, mean |log F/M|", _fmt(report.get("cooccurrence_bias_mean_abs"), ".3f")),
        ("co-occurrence bias, mean (signed; > 0 = female)", _fmt(report.get("cooccurrence_bias_mean"))),
        ("corr(bias, real-world share of women)", _fmt(report.get("cooccurrence_share_correlation"), ".2f")),
        ("parity, mean / min", f"{_fmt(report.get('mean_parity'), '.3f')} / {_fmt(report.get('min_parity'), '.3f')}"),
        ("sentiment gap (male - female), mean compound",
         _fmt(gap["gap"]) if gap else "-"),
        ("sentiment gap (male - female), positive rate",
         _fmt(gap["positive_rate_gap"]) if gap else "-"),
        ("classifier", report["classifier"] if isinstance(report.get("classifier"), str)
         else json.dumps(report["classifier"].get("label_rate_gap"))),
    ]
    w = max(len(k) for k, _ in summary) + 2
    lines += [f"{k:<{w}}{v}" for k, v in summary]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def write_csv(report: dict[str, Any], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in report["per_profession"]:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


def plot_disparity(report: dict[str, Any], path: str) -> None:
    """Per-profession bar chart: co-occurrence bias (sorted) against the real-world share of women (as
    log-odds, the bias a model matching labour statistics would have), and parity beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["per_profession"]]
    has_bias = any(r["cooccurrence_bias"] is not None for r in rows)
    has_parity = any(r["parity"] is not None for r in rows)
    if has_bias:
        rows.sort(key=lambda r: (r["cooccurrence_bias"] is None, r["cooccurrence_bias"] or 0.0))
    n = max(len(rows), 1)
    ncols = 1 + (has_bias and has_parity)
    fig, axes = plt.subplots(1, ncols, figsize=(7.5 + 3.5 * (ncols - 1), 2.0 + 0.24 * n), sharey=True,
                             gridspec_kw={"width_ratios": [3, 1.3][:ncols]}, squeeze=False)
    axes = axes[0]
    y = list(range(len(rows)))
    names = [r["profession"] for r in rows]
    ax = axes[0]
    if has_bias:
        bias = [r["cooccurrence_bias"] or 0.0 for r in rows]
        colors = ["#c2185b" if b > 0 else "#1565c0" for b in bias]
        ax.barh(y, bias, color=colors, height=0.7, label="model: log p(female) / p(male) next word")
        shares = [(i, r["female_share"]) for i, r in enumerate(rows) if r["female_share"] is not None]
        if shares:
            odds = [math.log(max(min(s, 99.5), 0.5) / (100 - max(min(s, 99.5), 0.5))) for _, s in shares]
            ax.scatter(odds, [i for i, _ in shares], marker="|", s=140, color="black", linewidths=2,
                       label="real world: log-odds of women in the occupation", zorder=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("co-occurrence bias   (< 0: male words expected  |  > 0: female words expected)")
        ax.set_title(f"Gender co-occurrence bias per profession (mean |bias| = "
                     f"{_fmt(report.get('cooccurrence_bias_mean_abs'), '.2f')})", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    pax = axes[-1] if has_parity else None
    if pax is not None:
        par = [r["parity"] for r in rows]
        pax.barh([i for i, p in zip(y, par) if p is not None], [p for p in par if p is not None],
                 color="#2e7d32", height=0.7)
        for i, p in zip(y, par):
            if p is None:
                pax.text(0.02, i, "undefined", va="center", fontsize=7, color="grey")
        pax.set_xlim(0, 1)
        pax.set_xlabel("parity min(F/M, M/F) of generations")
        pax.set_title(f"Parity (mean {_fmt(report.get('mean_parity'), '.2f')}, "
                      f"min {_fmt(report.get('min_parity'), '.2f')})", fontsize=10)
        pax.grid(axis="x", alpha=0.3)
    if not (has_bias or has_parity):
        ax.text(0.5, 0.5, "no per-profession metric was computed", ha="center", va="center",
                transform=ax.transAxes)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    fig.suptitle(f"{report['model']}  ·  prompts: {report['prompts']}", fontsize=9, color="dimgrey")
    bottom = 0.0
    if has_bias:  # legend under the plots, where it hides no bar
        bottom = 0.3 / fig.get_figheight()
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: str, plot: bool = True, run_id: str | None = None) -> dict[str, str]:
    """Write the report files into ``out_dir`` (created if needed). Returns their paths by kind.

    ``fairness.json`` carries the run id of the model it measures (``run_id``, else the id recorded in
    ``out_dir``), so a model card reads it only for that run."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, FAIRNESS_FILENAME), "csv": os.path.join(out_dir, PER_PROFESSION_FILENAME)}
    body = {k: v for k, v in report.items() if k != "generations"}
    run_id = run_id or read_run_id(out_dir)
    if run_id:
        body[RUN_ID_KEY] = run_id
    tmp = paths["json"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2)
    os.replace(tmp, paths["json"])
    if not report.get("per_profession"):  # no generation metrics (an intrinsic / downstream suite)
        return {"json": paths["json"]}
    write_csv(report, paths["csv"])
    if report.get("generations"):
        paths["generations"] = os.path.join(out_dir, GENERATIONS_FILENAME)
        with open(paths["generations"], "w", encoding="utf-8") as fh:
            for g in report["generations"]:
                fh.write(json.dumps(g) + "\n")
    if plot:
        paths["png"] = os.path.join(out_dir, DISPARITY_PLOT)
        plot_disparity(report, paths["png"])
    return paths


# ---- metric families side by side ------------------------------------------------------------------------

def format_suite_details(report: dict[str, Any]) -> str:
    """The intrinsic, downstream and prediction-sensitivity sections of one report, readable."""
    lines = []
    rep = report.get("representation")
    if rep:
        lines.append(f"representation TVD {_fmt(rep['representation_tvd'], '.3f')} (female share of gendered words "
                     f"{_fmt(rep['female_share'], '.2f')}), association TVD {_fmt(rep['association_tvd'], '.3f')}")
    ceat_r = (report.get("intrinsic") or {}).get("ceat")
    if ceat_r:
        lines.append(f"CEAT (layer {ceat_r['layer']}, {ceat_r['num_samples']} samples; > 0 = stereotypical):")
        for name, r in ceat_r["tests"].items():
            lines.append(f"  {name:<16} ES {r['effect_size']:+.3f}  (SE {r['se']:.3f}, p {r['p_value']:.2g}, "
                         f"tau2 {r['tau2']:.3g})")
    ps = report.get("prediction_sensitivity")
    if ps:
        lines.append(f"prediction sensitivity {ps['prediction_sensitivity']:.4g} (directional "
                     f"{ps['directional_sensitivity']:.4g}, mean log-odds female/male {ps['mean_log_odds']:+.3f}, "
                     f"{ps['num_prompts']} prompts)")
    down = report.get("downstream")
    if down:
        pr, mp = down["pronoun_resolution"], down["minimal_pairs"]
        lines.append(f"pronoun resolution: accuracy {pr['accuracy']:.3f} (he {_fmt(pr['accuracy_male'], '.3f')}, "
                     f"she {_fmt(pr['accuracy_female'], '.3f')}), pro {_fmt(pr['accuracy_pro'], '.3f')} - anti "
                     f"{_fmt(pr['accuracy_anti'], '.3f')} = gap {_fmt(pr['gap'])}, corr(she-he preference, share "
                     f"of women) {_fmt(pr['share_correlation'], '.2f')}, {pr['num_items']} items")
        lines.append(f"minimal pairs: stereotypical preferred in {mp['stereotype_share']:.1%} of {mp['num_pairs']} "
                     f"pairs (95% CI {mp['ci_low']:.1%}-{mp['ci_high']:.1%}; 50% is neutral)")
    return "\n".join(lines)


def format_suite_table(reports: list[dict[str, Any]]) -> str:
    """One row per model, one column per headline figure (families that no report has are left out)."""
    from .suite import HEADLINES, headline

    heads = [headline(r) for r in reports]
    cols = [h for h in HEADLINES if any(x[h[0]] is not None for x in heads)]
    rows = [["model"] + [c[1] for c in cols], ["family"] + [c[2] for c in cols]]
    for r, h in zip(reports, heads):
        rows.append([str(r["model"])] + [_fmt(h[c[0]], ".3f") for c in cols])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
           for row in rows]
    out.insert(2, "  ".join("-" * w for w in widths))
    out += [f"  {c[1]}: {c[3]}" for c in cols]
    return "\n".join(out)


def plot_suite(reports: list[dict[str, Any]], path: str) -> None:
    """One panel per headline figure, one bar per model, the fair value drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .suite import HEADLINES, headline

    heads = [headline(r) for r in reports]
    cols = [h for h in HEADLINES if any(x[h[0]] is not None for x in heads)]
    names = [str(r["model"]) for r in reports]
    fig, axes = plt.subplots(1, max(len(cols), 1), figsize=(2.6 * max(len(cols), 1) + 1, 3.6), squeeze=False)
    family_colour = {"generation": "#1565c0", "intrinsic": "#6a1b9a", "downstream": "#2e7d32"}
    for ax, (key, label, family, _) in zip(axes[0], cols):
        vals = [h[key] if h[key] is not None else 0.0 for h in heads]
        ax.bar(range(len(names)), vals, color=family_colour[family])
        ax.axhline(0.5 if key == "stereotype_share" else 0.0, color="black", lw=0.8)
        for i, (v, h) in enumerate(zip(vals, heads)):
            ax.text(i, v, "-" if h[key] is None else f"{v:.2f}", ha="center",
                    va="bottom" if v >= 0 else "top", fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{label}\n({family})", fontsize=9)
    if not cols:
        axes[0][0].text(0.5, 0.5, "no metric was computed", ha="center", va="center")
    fig.suptitle("Gender bias by metric family (fair value: line)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
