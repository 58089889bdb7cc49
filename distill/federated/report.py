"""The outputs of a federated run: ``fl_report.json``, a per-round log line, plots, the comparison table, and
the "Federated training" section of the model card (built from ``fl_report.json`` on disk).

The comparison (``distill federated --compare``) trains one global student per (selection, setting) and says
how sure each bias difference is, two ways:

* **over prompts**: each run's final ``|bias|`` carries a 95 % interval over the professions asked, and each
  run is compared with the first one profession by profession (:func:`compare_bias`: the paired difference of
  ``|b_g|``, its interval and a two-sided paired t-test; "cannot tell" when the interval holds 0);
* **over rounds**: ``bias_swing``, the mean ``| |bias|_r − |bias|_{r−1} |`` over the run's rounds after the
  first, how much the figure moves from one round to the next; a difference smaller than the swing is flagged
  (``within_swing``) even when the prompts separate it, because another round could reverse it.

Neither is an interval over training seeds: one seed trains each run (``distill audit --sweep --seeds N`` and
``distill demo --seeds N`` repeat training)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

from ..fairness.statistics import paired_difference
from ..hub.federated_section import CARD_MARKER, card_section
from ..outputs import CARD_FILENAME, FL_REPORT_FILENAME, RUN_ID_KEY, read_run_id

__all__ = ["CARD_MARKER", "card_section", "add_card_section"]


def _num(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def format_round(entry: dict, num_rounds: int) -> str:
    """One line per round, like `distill train`'s log lines."""
    r = entry.get("round", 0)
    parts = [f"round {r}/{num_rounds}"]
    if r > 0:
        sel = entry.get("selected", [])
        parts.append(f"devices {sel}")
        parts.append(f"loss {_num(entry.get('train_loss'))}")
    parts.append(f"perplexity {_num(entry.get('perplexity'), '.2f')}")
    bias = _with_interval(entry.get("cooccurrence_bias_mean_abs"), entry.get("cooccurrence_bias_ci95"))
    parts.append(f"|bias| {bias}")
    if "central_epsilon" in entry:
        parts.append(f"central ε {_num(entry['central_epsilon'], '.2f')}")
    if entry.get("round_seconds") is not None:
        parts.append(f"{entry['round_seconds']:.1f} s")
    failed = [f for f in entry.get("failed", []) if f.get("stage") == "train"]
    if failed:
        parts.append(f"FAILED devices {[f['device'] for f in failed]}")
    if entry.get("aggregation_skipped"):
        parts.append("aggregation skipped")
    return " | ".join(parts)


def _with_interval(value: Any, ci: list[float] | None, spec: str = ".3f") -> str:
    if value is None or not ci:
        return _num(value, spec)
    return f"{_num(value, spec)} [{_num(ci[0], spec)}, {_num(ci[1], spec)}]"


def failures(history: list[dict]) -> list[dict]:
    """Every failed device of the run, with its round."""
    return [{"round": e["round"], **f} for e in history for f in e.get("failed", [])]


def write_json(obj: Any, path: str) -> str:
    """Write ``obj`` atomically; a dict is stamped with the run id recorded in the file's directory, if any."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    run_id = read_run_id(directory)
    if run_id and isinstance(obj, dict):
        obj = {**obj, RUN_ID_KEY: run_id}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, default=float)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def plot_rounds(runs: dict[str, list[dict]], path: str, title: str = "Federated distillation") -> str:
    """Held-out perplexity and co-occurrence |bias| of the global student against rounds, one line a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, history in runs.items():
        rounds = [e["round"] for e in history]
        for ax, key in ((axes[0], "perplexity"), (axes[1], "cooccurrence_bias_mean_abs")):
            ys = [e.get(key) for e in history]
            line, = ax.plot(rounds, [float("nan") if y is None else y for y in ys], marker="o", markersize=3,
                            label=name)
            cis = [e.get("cooccurrence_bias_ci95") for e in history] if key != "perplexity" else []
            if cis and all(cis):  # 95 % interval over the professions asked
                ax.fill_between(rounds, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.12)
    axes[0].set_title("Held-out perplexity of the global student (lower is better)")
    axes[1].set_title("Co-occurrence |bias|, 95 % interval over professions (lower is fairer)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bias_swing(history: list[dict]) -> float | None:
    """Mean absolute change of ``|bias|`` from one round to the next, over the rounds after the first."""
    ys = [e.get("cooccurrence_bias_mean_abs") for e in history[1:]]
    steps = [abs(b - a) for a, b in zip(ys, ys[1:]) if a is not None and b is not None]
    return _mean(steps)


def summary_row(name: str, report: dict) -> dict:
    """Final and best numbers of a run, for the comparison table."""
    history = report["rounds"]
    final = history[-1]
    ppl = [e.get("perplexity") for e in history if e.get("perplexity") is not None]
    return {"run": name, "final_perplexity": final.get("perplexity"), "best_perplexity": min(ppl) if ppl else None,
            "final_bias": final.get("cooccurrence_bias_mean_abs"),
            "final_bias_ci95": final.get("cooccurrence_bias_ci95"),
            "bias_swing": bias_swing(history), "num_bias_prompts": final.get("num_bias_prompts"),
            "records_per_round": _mean([sum(e.get("selected_records", [])) for e in history[1:]]),
            "distinct_devices": len({d for e in history[1:] for d in e.get("selected", [])}),
            "failures": len(failures(history)), "seconds": report.get("runtime_seconds")}


def compare_bias(run: dict, baseline: dict) -> dict | None:
    """``run``'s final ``|b_g|`` against ``baseline``'s, paired over the professions both were asked about
    (:func:`distill.fairness.statistics.paired_difference`), and whether the difference is within either run's
    round-to-round swing. ``None`` when a report has no per-profession bias."""
    a = run["rounds"][-1].get("cooccurrence_bias_by_profession") or {}
    b = baseline["rounds"][-1].get("cooccurrence_bias_by_profession") or {}
    common = [g for g in a if g in b]
    if not common:
        return None
    out = paired_difference([abs(a[g]) for g in common], [abs(b[g]) for g in common])
    swing = max((s for s in (bias_swing(run["rounds"]), bias_swing(baseline["rounds"])) if s is not None),
                default=None)
    out["swing"] = swing
    out["within_swing"] = None if swing is None else abs(out["mean_difference"]) <= swing
    return out


def comparison_rows(reports: dict[str, dict]) -> list[dict]:
    """:func:`summary_row` of each run, with ``bias_vs_first``: :func:`compare_bias` against the first run."""
    names = list(reports)
    rows = []
    for name in names:
        row = summary_row(name, reports[name])
        row["bias_vs_first"] = None if name == names[0] else compare_bias(reports[name], reports[names[0]])
        rows.append(row)
    return rows


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _difference(c: dict | None) -> str:
    if not c:
        return "-"
    text = f"{c['mean_difference']:+.3f}"
    if c.get("ci95"):
        text += f" [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
    tell = c["verdict"]
    if tell != "cannot tell" and c.get("within_swing"):
        tell += ", within swing"
    return f"{text} {tell}"


def format_table(rows: list[dict]) -> str:
    header = ("run", "final ppl", "best ppl", "final |bias| [95% CI]", "vs first run [95% CI]", "round swing",
              "records/round", "devices used", "failures", "time (s)")
    lines = [header]
    for r in rows:
        lines.append((r["run"], _num(r["final_perplexity"], ".3f"), _num(r["best_perplexity"], ".3f"),
                      _with_interval(r["final_bias"], r.get("final_bias_ci95")), _difference(r.get("bias_vs_first")),
                      _num(r.get("bias_swing")), _num(r["records_per_round"], ".0f"), str(r["distinct_devices"]),
                      str(r["failures"]), _num(r["seconds"], ".0f")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    prompts = {r.get("num_bias_prompts") for r in rows} - {None}
    if prompts:
        out.append(f"|bias| over {', '.join(map(str, sorted(prompts)))} profession prompts; intervals over "
                   "professions; 'vs first run': paired difference of |bias| by profession; round swing: mean "
                   "change of |bias| between rounds (one training seed per run).")
    return "\n".join(out)


def add_card_section(model_dir: str) -> str | None:
    """Insert :func:`card_section` (from ``fl_report.json``) into ``model_dir/README.md`` before "## Evaluation"."""
    card_path = os.path.join(model_dir, CARD_FILENAME)
    report_path = os.path.join(model_dir, FL_REPORT_FILENAME)
    if not (os.path.isfile(card_path) and os.path.isfile(report_path)):
        return None
    with open(report_path, encoding="utf-8") as fh:
        section = card_section(json.load(fh))
    with open(card_path, encoding="utf-8") as fh:
        text = fh.read()
    if CARD_MARKER in text:
        return card_path
    anchor = text.find("## Evaluation")
    text = text + "\n" + section if anchor < 0 else text[:anchor] + section + "\n" + text[anchor:]
    fd, tmp = tempfile.mkstemp(prefix=".README-", suffix=".md.tmp", dir=model_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, card_path)
    return card_path
