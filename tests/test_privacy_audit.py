"""Audits: MIA AUC and canary exposure maths; DP visibly reduces both on a tiny memorisation setup."""

import json
import math
import random

import pytest

from distill.privacy.audit import (canary_exposure, extract_canaries, membership_attacks, membership_auc, roc_auc,
                                   roc_curve, sequence_losses, tpr_at_fpr)
from distill.privacy.canary import insert_canary, make_canary, random_candidates, split_canary


def test_membership_auc_is_the_mann_whitney_statistic():
    assert membership_auc([0.1, 0.2], [0.9, 1.0]) == 1.0  # members have lower loss: perfect attack
    assert membership_auc([0.9, 1.0], [0.1, 0.2]) == 0.0
    assert membership_auc([0.5, 0.5], [0.5, 0.5]) == 0.5  # ties count one half
    # brute force over pairs
    m, n = [0.3, 0.7, 0.2, 0.9], [0.4, 0.8, 0.1]
    pairs = sum((a < b) + 0.5 * (a == b) for a in m for b in n) / (len(m) * len(n))
    assert membership_auc(m, n) == pytest.approx(pairs)


def _brute_force_roc(pos, neg):
    """Every threshold t in the scores (and +inf): (FPR, TPR) of the rule score >= t, from the definition."""
    points = {(0.0, 0.0)}
    for t in set(pos) | set(neg):
        points.add((sum(x >= t for x in neg) / len(neg), sum(x >= t for x in pos) / len(pos)))
    return sorted(points)


def test_roc_auc_and_tpr_at_fpr_match_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        pos = [rng.choice(range(8)) + rng.random() * rng.choice([0, 1]) for _ in range(rng.randint(1, 30))]
        neg = [rng.choice(range(8)) + rng.random() * rng.choice([0, 1]) for _ in range(rng.randint(1, 30))]
        fpr, tpr = roc_curve(pos, neg)
        assert sorted(zip(fpr, tpr)) == _brute_force_roc(pos, neg)
        pairs = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
        assert roc_auc(pos, neg) == pytest.approx(pairs)
        for max_fpr in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0):
            ref = max(sum(x >= t for x in pos) / len(pos) if sum(x >= t for x in neg) / len(neg) <= max_fpr else 0.0
                      for t in list(set(pos) | set(neg)) + [float("inf")])
            assert tpr_at_fpr(pos, neg, max_fpr) == pytest.approx(ref)
    # members all above non-members: TPR 1 at FPR 0; reversed: 0
    assert tpr_at_fpr([5, 6], [1, 2, 3], 0.001) == 1.0 and tpr_at_fpr([1, 2], [5, 6], 0.01) == 0.0
    attacks = membership_attacks([0.1, 0.2], [0.9, 1.0], [0.5, 0.5], [0.5, 0.5])
    assert attacks["loss_threshold"]["auc"] == 1.0 and attacks["reference_calibrated"]["auc"] == 1.0
    # the reference removes per-text difficulty: members are easy texts the model did NOT learn extra
    flat = membership_attacks([0.1, 0.2], [0.9, 1.0], [0.1, 0.2], [0.9, 1.0])
    assert flat["loss_threshold"]["auc"] == 1.0 and flat["reference_calibrated"]["auc"] == 0.5


def test_canary_format_and_candidates():
    c = make_canary(1234)
    assert c == make_canary(1234) and c != make_canary(1235)
    prefix, digits = split_canary(c)
    assert prefix == "my secret number is" and digits == 6
    cands = random_candidates(prefix, digits, 50, seed=0, exclude=c)
    assert len(set(cands)) == 50 and c not in cands and all(split_canary(x) == (prefix, 6) for x in cands)
    from datasets import Dataset

    ds, canary = insert_canary(Dataset.from_dict({"text": ["a b", "c d"]}), "text", 3, 1234)
    assert ds["text"].count(canary) == 3 and len(ds) == 5


def _run(tiny_args, texts, out, dp: bool):
    from distill.distillation.train import run_training

    kw = dict(output_dir=str(out), packing=False, canary_repeats=16, canary_seed=7, validation_split_percentage=0,
              max_steps=30, per_device_train_batch_size=8, learning_rate=8e-3, alpha_kd=0.5, alpha_lm=1.0,
              lr_scheduler_type="constant", logging_steps=10)
    if dp:
        kw.update(dp_enabled=True, dp_noise_multiplier=1.0, dp_max_grad_norm=0.5)
    return run_training(tiny_args(**kw), texts=texts)


def test_dp_lowers_exposure_and_membership_inference(tiny_args, tmp_path, gpt2_tok, tiny_teacher_dir):
    """Canary inserted 16x, 32 member records, 30 steps: without DP the model memorises; with DP (σ=1) it does not.
    Both attacks (loss threshold, teacher-calibrated), exposure and extraction."""
    from distill.model_loading import load_causal_lm

    from distill.builtin.corpus import builtin_texts

    unique = list(dict.fromkeys(builtin_texts("tiny")))
    members, non_members = unique[:32], unique[100:132]
    canary = make_canary(7)
    teacher = load_causal_lm(tiny_teacher_dir)
    rm, rn = sequence_losses(teacher, gpt2_tok, members), sequence_losses(teacher, gpt2_tok, non_members)
    results, extraction = {}, {}
    for dp in (False, True):
        trainer = _run(tiny_args, members, tmp_path / f"dp{int(dp)}", dp)
        model = trainer.model
        lm = sequence_losses(model, gpt2_tok, members)
        ln = sequence_losses(model, gpt2_tok, non_members)
        exp = canary_exposure(model, gpt2_tok, canary, num_candidates=127, seed=0)
        attacks = membership_attacks(lm, ln, rm, rn)
        assert attacks["loss_threshold"]["auc"] == pytest.approx(membership_auc(lm, ln))
        results[dp] = (attacks["loss_threshold"]["auc"], attacks["reference_calibrated"]["auc"], exp.exposure)
        extraction[dp] = extract_canaries(model, gpt2_tok, [canary], num_beams=8)[0]
    (auc_plain, cal_plain, exp_plain), (auc_dp, cal_dp, exp_dp) = results[False], results[True]
    print("audit (loss AUC, calibrated AUC, exposure):", results, "extraction:", extraction)
    assert exp_plain >= 5.0 and exp_plain > exp_dp + 3.0, results
    assert auc_plain >= 0.7 and auc_plain > auc_dp + 0.15, results
    assert cal_plain >= 0.8 and cal_plain > cal_dp + 0.2, results
    # 30 steps memorise the canary partly: greedy decoding recovers more of its digits without DP than with it
    # (measured: 3 of 6 without DP, 0 of 6 with σ=1)
    assert extraction[False]["digits_correct_greedy"] > extraction[True]["digits_correct_greedy"], extraction
    assert not extraction[True]["extracted_greedy"] and extraction[True]["beam_rank"] is None, extraction
    assert (tmp_path / "dp1" / "privacy.json").exists()


def test_audit_command_writes_audit_json(tiny_teacher_dir, tmp_path, run_cli):
    members, non_members = tmp_path / "m.txt", tmp_path / "n.txt"
    members.write_text("the nurse said she was tired.\nthe doctor said he was late.\n")
    non_members.write_text("a cat sat on the mat.\nthe sky is blue today.\n")
    out = tmp_path / "audit.json"
    rc, _, err = run_cli("audit", "--model", tiny_teacher_dir, "--members", members, "--non-members", non_members,
                         "--canary-seed", "7", "--num-candidates", "15", "--num-beams", "4", "--reference",
                         tiny_teacher_dir, "--output", out)
    assert rc == 0, err[-2000:]
    report = json.loads(out.read_text())
    mia = report["membership_inference"]
    assert 0.0 <= mia["loss_threshold"]["auc"] <= 1.0
    assert mia["reference_calibrated"]["auc"] == 0.5  # the model is its own reference: every score is 0
    assert mia["reference_model"] == tiny_teacher_dir
    c = report["canaries"][0]
    assert c["extraction"]["num_beams"] == 4 and isinstance(c["extraction"]["extracted_greedy"], bool)
    assert c["canary"] == make_canary(7) and 1 <= c["rank"] <= 16
    assert c["exposure"] == pytest.approx(math.log2(16) - math.log2(c["rank"]))
    rc, _, err = run_cli("audit", "--model", tiny_teacher_dir, "--members", members)
    assert rc == 2 and "--non-members" in err and "Traceback" not in err


def _sweep_rows(biases: dict) -> list[dict]:
    return [{"name": f"{m}_eps{e}_seed{seed}", "crr": m == "crr", "method": m, "seed": seed, "target_epsilon": e,
             "epsilon": e, "noise_multiplier": 1.0 if e else 0.0, "perplexity": 2.0 + seed, "mia_loss_auc": 0.6,
             "mia_loss_tpr_1pct": 0.02, "mia_ref_auc": 0.7 + 0.01 * seed, "mia_ref_tpr_1pct": 0.05,
             "canary_exposure": 3.0, "canary_max_exposure": 9.0, "canary_extracted_greedy": e is None and seed == 0,
             "canary_beam_rank": None, "canary_digits_greedy": 1, "cooccurrence_bias": biases[m, e][seed]}
            for m in ("kd", "crr") for e in (1.0, 8.0, None) for seed in range(3)]


def test_sweep_points_table_plot_and_epsilon_parsing(tmp_path):
    from distill.demo.privacy_sweep import format_sweep_table, parse_epsilons, plot_sweep, summarise_points
    from distill.errors import ConfigError
    from distill.fairness.statistics import summary

    assert parse_epsilons("1, 4,8,inf") == [1.0, 4.0, 8.0, math.inf]
    for bad in ("", "a,b", "0,1", "nan"):
        with pytest.raises(ConfigError, match="--epsilons"):
            parse_epsilons(bad)
    biases = {("kd", 1.0): [0.5, 0.6, 0.55], ("crr", 1.0): [0.1, 0.2, 0.12],   # CRR clearly lower
              ("kd", 8.0): [0.39, 0.50, 0.41], ("crr", 8.0): [0.54, 0.30, 0.47],  # the seeds disagree
              ("kd", None): [0.4, 0.4, 0.4], ("crr", None): [0.3, 0.3, 0.3]}
    points, comparisons = summarise_points(_sweep_rows(biases), [1.0, 8.0, math.inf])
    assert len(points) == 6
    p = next(p for p in points if p["method"] == "crr" and p["epsilon"] == 8.0)
    assert p["n_seeds"] == 3 and p["seeds"] == [0, 1, 2] and p["epsilon_label"] == "8"
    for key in ("perplexity", "bias", "mia_auc", "exposure"):
        assert set(p[key]) == {"mean", "ci95", "values"}
    assert p["bias"] == summary([0.54, 0.30, 0.47]) and p["mia_auc"]["values"] == pytest.approx([0.7, 0.71, 0.72])
    assert next(p for p in points if p["epsilon"] is None and p["method"] == "kd")["canary_extracted_greedy"] == 1
    by_eps = {c["epsilon_label"]: c for c in comparisons}
    assert by_eps["1"]["p_value"] < 0.05 and by_eps["1"]["verdict"].startswith("yes")
    assert by_eps["8"]["p_value"] > 0.05 and by_eps["8"]["verdict"].startswith("cannot tell (p = ")
    assert by_eps["inf"]["p_value"] == 0.0  # every seed 0.1 lower: no spread, decided by the sign
    report = {"epsilons": ["1", "8", "inf"], "points": points, "comparisons": comparisons}
    table = format_sweep_table(report).splitlines()
    assert len(table) == 2 + len(points) + 1 + len(comparisons)
    assert "0.437 [" in table[5]  # crr at epsilon 8: mean [lo, hi] of the bias
    assert "CRR lowers bias vs KD at epsilon = 8: cannot tell (p = " in table[-2]
    plot_sweep(report, str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_sweep_seeds_in_process(monkeypatch, tmp_path, capsys):
    """`distill audit --sweep --seeds 2` at the smallest size: every run trained with its seed, sweep.json's schema."""
    from distill.cli import main
    from distill.demo import privacy_sweep

    monkeypatch.setattr(privacy_sweep.SweepSpec, "quick", classmethod(lambda cls: cls.tiny()))
    out = tmp_path / "sweep"
    assert main(["audit", "--sweep", "--quick", "--seeds", "2", "--epsilons", "8", "--jobs", "1",
                 "--output_dir", str(out)]) == 0
    report = json.loads((out / "sweep.json").read_text())
    assert report["seeds"] == [0, 1] and "Student t" in report["interval"]
    assert sorted((r["method"], r["seed"]) for r in report["rows"]) == [("crr", 0), ("crr", 1), ("kd", 0), ("kd", 1)]
    for r in report["rows"]:
        cfg = (out / r["name"] / "distill_config.yaml").read_text()
        assert f"seed: {r['seed']}" in cfg.splitlines() and r["epsilon"] <= 8.0 + 1e-9
    assert len({r["noise_multiplier"] for r in report["rows"]}) == 1  # one calibration shared by every run
    for p in report["points"]:
        assert p["epsilon"] == 8.0 and p["n_seeds"] == 2 and p["method"] in ("kd", "crr")
        for key in ("perplexity", "bias", "mia_auc", "exposure"):
            assert len(p[key]["values"]) == 2 and len(p[key]["ci95"]) == 2
    (c,) = report["comparisons"]
    assert c["n"] == 2 and c["seeds"] == [0, 1] and c["verdict"].startswith(("yes", "cannot tell"))
    printed = capsys.readouterr()
    assert "CRR lowers bias vs KD at epsilon = 8: " in printed.out and (out / "sweep.png").exists()
    with pytest.raises(SystemExit):  # --out is a hidden alias: not in --help
        main(["audit", "--help"])
    assert "--out " not in capsys.readouterr().out
