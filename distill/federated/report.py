"""The outputs of a federated run: ``fl_report.json``, a per-round log line, plots, the comparison table, and
the "Federated training" section of the model card (built from ``fl_report.json`` on disk)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

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
    parts.append(f"|bias| {_num(entry.get('cooccurrence_bias_mean_abs'))}")
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
            ax.plot(rounds, [float("nan") if y is None else y for y in ys], marker="o", markersize=3, label=name)
    axes[0].set_title("Held-out perplexity of the global student (lower is better)")
    axes[1].set_title("Co-occurrence bias |mean| (lower is fairer)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_row(name: str, report: dict) -> dict:
    """Final and best numbers of a run, for the comparison table."""
    history = report["rounds"]
    final = history[-1]
    ppl = [e.get("perplexity") for e in history if e.get("perplexity") is not None]
    return {"run": name, "final_perplexity": final.get("perplexity"), "best_perplexity": min(ppl) if ppl else None,
            "final_bias": final.get("cooccurrence_bias_mean_abs"),
            "records_per_round": _mean([sum(e.get("selected_records", [])) for e in history[1:]]),
            "distinct_devices": len({d for e in history[1:] for d in e.get("selected", [])}),
            "failures": len(failures(history)), "seconds": report.get("runtime_seconds")}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def format_table(rows: list[dict]) -> str:
    header = ("run", "final ppl", "best ppl", "final |bias|", "records/round", "devices used", "failures",
              "time (s)")
    lines = [header]
    for r in rows:
        lines.append((r["run"], _num(r["final_perplexity"], ".3f"), _num(r["best_perplexity"], ".3f"),
                      _num(r["final_bias"]), _num(r["records_per_round"], ".0f"), str(r["distinct_devices"]),
                      str(r["failures"]), _num(r["seconds"], ".0f")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
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
