"""Statistics over seeds: the mean, its Student t interval, and a one-sided paired t-test.

A comparison between two training methods is made over ``n`` seeds; seed ``i`` trains both methods (paired
design: the same initialisation seed, data order and CDA coin flips where both use them). The same functions
serve where the pairs are the professions two models were both asked about (:func:`paired_difference`):
the interval then says how far the prompts asked, not the training seed, move the figure.

* **Mean and t interval** of values ``x_1..x_n``: ``x̄ ± t_{1-(1-c)/2, n-1} · s / √n`` with ``s`` the sample
  standard deviation (``n - 1`` in the denominator) and ``c`` the confidence (0.95). With one value there is no
  interval (``None``).
* **Paired test** of the claim "``a`` is lower than ``b``": differences ``d_i = a_i - b_i``,
  ``t = d̄ / (s_d / √n)`` with ``n - 1`` degrees of freedom, one-sided p-value ``P(T ≤ t)`` (``scipy.stats.ttest_rel``
  with ``alternative="less"``). ``s_d = 0`` is decided from the sign of ``d̄`` (p = 0 when every difference is
  strictly in the claimed direction, 1 otherwise); with fewer than two pairs there is no test (``p = None``).
* **Verdict**: "yes" when ``p < alpha`` (0.05), otherwise "cannot tell (p = ...)" — a large p-value is no evidence
  that the methods are equal, only that these seeds cannot separate them.

Pure functions of lists of floats: no model, no config.
"""

from __future__ import annotations

import math
from typing import Sequence

#: What the intervals are, for reports and printed tables.
INTERVAL_METHOD = "95 % Student t interval over seeds"
TEST_METHOD = "one-sided paired t-test over seeds (scipy.stats.ttest_rel)"


def _floats(values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError("No values: a statistic over seeds needs at least one run.")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"Non-finite value among {out}: a statistic over seeds needs finite numbers.")
    return out


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean."""
    xs = _floats(values)
    return math.fsum(xs) / len(xs)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The Student t interval of the mean, ``x̄ ± t · s/√n``; ``None`` for a single value."""
    from scipy.stats import t as student_t

    xs = _floats(values)
    n = len(xs)
    if n < 2:
        return None
    m = mean(xs)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))
    half = float(student_t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return (m - half, m + half)


def summary(values: Sequence[float], confidence: float = 0.95) -> dict:
    """``{"mean", "ci95": [lo, hi] or None, "values"}`` (the JSON form of a figure over seeds)."""
    xs = _floats(values)
    ci = t_interval(xs, confidence)
    return {"mean": mean(xs), "ci95": None if ci is None else [ci[0], ci[1]], "values": xs}


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """One-sided paired t-test of "``a`` is lower than ``b``" (pairs = seeds).

    Returns ``n``, ``mean_difference`` (mean of ``a - b``), ``ci95`` of that difference (None for one pair),
    ``t`` and ``p_value`` (None for one pair; ``t`` is None also when every difference is the same), ``method``.
    """
    from scipy.stats import ttest_rel

    xa, xb = _floats(a), _floats(b)
    if len(xa) != len(xb):
        raise ValueError(f"A paired test needs as many values on each side, got {len(xa)} and {len(xb)}.")
    diffs = [x - y for x, y in zip(xa, xb)]
    n, d = len(diffs), mean(diffs)
    ci = t_interval(diffs)
    result = {"n": n, "mean_difference": d, "ci95": None if ci is None else [ci[0], ci[1]], "t": None,
              "p_value": None, "method": TEST_METHOD}
    if n < 2:
        return result
    if all(x == diffs[0] for x in diffs):  # s_d = 0: the t statistic is ±inf or undefined
        result["p_value"] = 0.0 if d < 0 else 1.0
        return result
    res = ttest_rel(xa, xb, alternative="less")
    result["t"], result["p_value"] = float(res.statistic), float(res.pvalue)
    return result


def paired_difference(a: Sequence[float], b: Sequence[float], unit: str = "professions") -> dict:
    """Two-sided: is ``a`` different from ``b``? Pairs ``a_i``, ``b_i`` measured on the same unit ``i``.

    ``mean_difference`` (of ``a - b``) with its Student t ``ci95``, the two-sided paired t-test's ``p_value``
    (``scipy.stats.ttest_rel``), and ``verdict``: "lower" or "higher" when the interval excludes 0, else
    "cannot tell". Fewer than two pairs: no interval, no test, "cannot tell"."""
    from scipy.stats import ttest_rel

    xa, xb = _floats(a), _floats(b)
    if len(xa) != len(xb):
        raise ValueError(f"A paired comparison needs as many values on each side, got {len(xa)} and {len(xb)}.")
    diffs = [x - y for x, y in zip(xa, xb)]
    ci = t_interval(diffs)
    p = None
    if ci is not None and not all(x == diffs[0] for x in diffs):
        p = float(ttest_rel(xa, xb).pvalue)
    lower, higher = ci is not None and ci[1] < 0, ci is not None and ci[0] > 0
    return {"n": len(diffs), "mean_difference": mean(diffs), "ci95": None if ci is None else [ci[0], ci[1]],
            "p_value": p, "verdict": "lower" if lower else "higher" if higher else "cannot tell",
            "method": f"95 % Student t interval of the paired difference over {unit}; two-sided paired t-test"}


def verdict(test: dict, alpha: float = 0.05) -> str:
    """"yes (p = ...)" when the paired test backs the claim at ``alpha``, else "cannot tell (p = ...)"."""
    p = test.get("p_value")
    if p is None:
        return f"cannot tell (p = n/a: {test.get('n', 0)} seed{'s' if test.get('n', 0) != 1 else ''}, a paired " \
               "test needs at least 2)"
    return f"{'yes' if p < alpha else 'cannot tell'} (p = {p:.3g}, n = {test['n']} seeds)"


def compare(claim: str, a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict:
    """The JSON record of a claim "a is lower than b": the claim, the paired test and its verdict."""
    test = paired_test(a, b)
    return {"claim": claim, "alpha": alpha, **test, "verdict": verdict(test, alpha)}


def format_interval(s: dict, spec: str = ".3f") -> str:
    """``mean [lo, hi]`` (or the mean alone when there is no interval)."""
    if s.get("ci95") is None:
        return format(s["mean"], spec)
    lo, hi = s["ci95"]
    return f"{format(s['mean'], spec)} [{format(lo, spec)}, {format(hi, spec)}]"
