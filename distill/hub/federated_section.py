"""The "Federated training" section of the model card, built from ``fl_report.json`` on disk.

:func:`~distill.hub.card.build_model_card` inserts it whenever the model directory holds ``fl_report.json``, so
every rewrite of the card (`distill card --force`, `distill evaluate`, `distill push`) keeps it.
"""

from __future__ import annotations

import math
from typing import Any

from ..outputs import FL_REPORT_FILENAME

CARD_MARKER = "## Federated training"


def _num(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def failures(history: list[dict]) -> list[dict]:
    """Every failed device of the run, with its round."""
    return [{"round": e["round"], **f} for e in history for f in e.get("failed", [])]


def card_section(report: dict) -> str:
    """Markdown for the model card: how the model was trained federatedly, and what DP covers."""
    fl, dev = report["federated"], report["devices"]
    final = report["rounds"][-1]
    fails = failures(report["rounds"])
    lines = [
        CARD_MARKER, "",
        f"This student was trained **federatedly** with [Flower](https://flower.ai) {report.get('flwr_version', '')}: "
        "the training records stayed on the devices, which sent back only model weights.", "",
        "| federated setting | value |", "|---|---|",
        f"| devices (N) | {fl['num_devices']} |",
        f"| devices per round (K) | {fl['devices_per_round']} |",
        f"| rounds | {fl['num_rounds']} |",
        f"| local steps per round | {fl['local_steps']} |",
        f"| selection | {fl['selection']}" + (f" (P ∝ records^{fl['activity_exponent']:g})"
                                                if fl["selection"] == "activity" else "") + " |",
        f"| setting | {fl['setting']}" + (f", storage {fl['storage']} records" if fl.get("storage") else "") + " |",
        f"| partition | {fl['partition']}" + (f" (α = {fl['partition_alpha']:g})" if fl["partition"] != "iid" else "")
        + (f" over `{fl['partition_attribute']}`" if fl["partition"] == "attribute" else "") + " |",
        f"| records on devices | {dev['total_records']} (sizes {min(dev['sizes'])}–{max(dev['sizes'])}) |",
        f"| aggregation | FedAvg, {'unweighted mean of clipped updates' if fl['central_dp'] else 'weighted by records'} |",
        f"| local DP-SGD | {'on' if report.get('local_dp') else 'off'} |",
        "| central (user-level) DP | " + (f"on: ε = {_num(final.get('central_epsilon'), '.3g')}, δ = "
                                          f"{_num(final.get('central_delta'), '.3g')}, σ = "
                                          f"{fl['central_dp_noise_multiplier']:g}, C = {fl['central_dp_clipping_norm']:g}"
                                          if fl["central_dp"] else "off") + " |",
        f"| device failures | {len(fails)} |", "",
    ]
    if report.get("local_dp"):
        lines += ["Local DP-SGD protects each **record** of a device against anyone who sees that device's updates; "
                  f"the largest per-device ε (sum over its local trainings) is {_num(report.get('local_epsilon_max'), '.3g')}.", ""]
    if fl["central_dp"]:
        lines += ["Central DP protects each **device's whole data** (add/remove one device) in the sequence of "
                  "global models, assuming an honest server (it sees individual updates before the noise); no "
                  "amplification by device sampling is claimed.", ""]
    lines += [f"Held-out perplexity of the final global student: {_num(final.get('perplexity'), '.3f')}; "
              f"co-occurrence |bias|: {_num(final.get('cooccurrence_bias_mean_abs'))}{_bias_interval(final)}. "
              f"Per-round numbers are in `{FL_REPORT_FILENAME}`.", ""]
    return "\n".join(lines)


def _bias_interval(final: dict) -> str:
    ci, n = final.get("cooccurrence_bias_ci95"), final.get("num_bias_prompts")
    if not ci:
        return ""
    return f" (95 % interval over the professions asked: [{_num(ci[0])}, {_num(ci[1])}]" + (
        f", {n} prompts)" if n else ")")
