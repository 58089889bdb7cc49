"""Statistics over seeds against references computed by hand from the definitions."""

import math

import pytest

from distill.fairness.statistics import (compare, format_interval, mean, paired_difference, paired_test, summary,
                                        t_interval, verdict)


def test_mean_and_t_interval_by_hand():
    xs = [0.54, 0.39, 0.61]
    m = (0.54 + 0.39 + 0.61) / 3
    s = math.sqrt(((0.54 - m) ** 2 + (0.39 - m) ** 2 + (0.61 - m) ** 2) / 2)
    t975_2 = 4.302652729911275  # t quantile 0.975, 2 degrees of freedom (tables: 4.303)
    assert mean(xs) == pytest.approx(m)
    lo, hi = t_interval(xs)
    assert lo == pytest.approx(m - t975_2 * s / math.sqrt(3)) and hi == pytest.approx(m + t975_2 * s / math.sqrt(3))
    # n = 2: t quantile 12.706 (1 degree of freedom); the interval of [1, 3] is 2 ± 12.706 · √2 / √2
    assert t_interval([1.0, 3.0]) == pytest.approx((2 - 12.706204736174698, 2 + 12.706204736174698))
    assert t_interval([5.0]) is None
    s1 = summary([5.0])
    assert s1 == {"mean": 5.0, "ci95": None, "values": [5.0]}
    assert summary(xs)["ci95"] == pytest.approx([lo, hi])
    with pytest.raises(ValueError):
        mean([])
    with pytest.raises(ValueError):
        summary([1.0, float("nan")])


def test_paired_test_by_hand_and_against_scipy():
    from scipy.stats import t as student_t, ttest_rel

    a, b = [0.30, 0.25, 0.41, 0.33], [0.52, 0.40, 0.47, 0.58]
    d = [x - y for x, y in zip(a, b)]
    n, dm = 4, sum(d) / 4
    sd = math.sqrt(sum((x - dm) ** 2 for x in d) / 3)
    t = dm / (sd / math.sqrt(n))
    res = paired_test(a, b)
    assert res["n"] == 4 and res["mean_difference"] == pytest.approx(dm)
    assert res["t"] == pytest.approx(t)
    assert res["p_value"] == pytest.approx(student_t.cdf(t, 3))  # one-sided: P(T <= t)
    assert res["p_value"] == pytest.approx(ttest_rel(a, b, alternative="less").pvalue)
    assert res["p_value"] < 0.05 and verdict(res).startswith("yes (p = ")
    # the other way round the claim is not backed
    assert paired_test(b, a)["p_value"] == pytest.approx(1 - res["p_value"])


def test_cannot_tell_when_seeds_disagree_or_are_too_few():
    noisy = compare("CRR lowers bias vs KD", [0.54, 0.30, 0.47], [0.39, 0.45, 0.50])
    assert noisy["p_value"] > 0.05
    assert noisy["verdict"] == f"cannot tell (p = {noisy['p_value']:.3g}, n = 3 seeds)"
    one = compare("CRR lowers bias vs KD", [0.1], [0.5])
    assert one["p_value"] is None and one["ci95"] is None and one["verdict"].startswith("cannot tell (p = n/a")
    # zero spread in the differences: decided by their sign
    assert paired_test([1.0, 2.0], [2.0, 3.0])["p_value"] == 0.0
    assert paired_test([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0
    with pytest.raises(ValueError, match="as many"):
        paired_test([1.0], [1.0, 2.0])


def test_format_interval():
    assert format_interval({"mean": 0.5, "ci95": [0.25, 0.75]}) == "0.500 [0.250, 0.750]"
    assert format_interval({"mean": 0.5, "ci95": None}, ".2f") == "0.50"


def test_paired_difference_two_sided_by_hand():
    from scipy.stats import t as student_t

    # |bias| of 5 professions under two runs: run a is lower on every one
    a, b = [0.10, 0.22, 0.05, 0.31, 0.12], [0.18, 0.35, 0.09, 0.40, 0.15]
    d = [x - y for x, y in zip(a, b)]
    dm = sum(d) / 5
    sd = math.sqrt(sum((x - dm) ** 2 for x in d) / 4)
    t = dm / (sd / math.sqrt(5))
    half = student_t.ppf(0.975, 4) * sd / math.sqrt(5)
    res = paired_difference(a, b)
    assert res["n"] == 5 and res["mean_difference"] == pytest.approx(dm)
    assert res["ci95"] == pytest.approx([dm - half, dm + half])
    assert res["p_value"] == pytest.approx(2 * student_t.cdf(-abs(t), 4))  # two-sided
    assert res["verdict"] == "lower" and paired_difference(b, a)["verdict"] == "higher"
    # differences of both signs: the interval holds 0
    mixed = paired_difference([0.1, 0.3, 0.2, 0.25], [0.2, 0.1, 0.25, 0.2])
    assert mixed["ci95"][0] < 0 < mixed["ci95"][1] and mixed["verdict"] == "cannot tell"
    assert paired_difference([0.1], [0.2]) | {"method": None} == {
        "n": 1, "mean_difference": pytest.approx(-0.1), "ci95": None, "p_value": None, "verdict": "cannot tell",
        "method": None}
    with pytest.raises(ValueError, match="as many"):
        paired_difference([1.0], [1.0, 2.0])
