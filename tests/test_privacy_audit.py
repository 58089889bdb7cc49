"""Audits: MIA AUC and canary exposure maths; DP visibly reduces both on a tiny memorisation setup."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO
from distill.privacy.audit import canary_exposure, membership_auc, sequence_losses
from distill.privacy.canary import insert_canary, make_canary, random_candidates, split_canary


def test_membership_auc_is_the_mann_whitney_statistic():
    assert membership_auc([0.1, 0.2], [0.9, 1.0]) == 1.0  # members have lower loss: perfect attack
    assert membership_auc([0.9, 1.0], [0.1, 0.2]) == 0.0
    assert membership_auc([0.5, 0.5], [0.5, 0.5]) == 0.5  # ties count one half
    # brute force over pairs
    m, n = [0.3, 0.7, 0.2, 0.9], [0.4, 0.8, 0.1]
    pairs = sum((a < b) + 0.5 * (a == b) for a in m for b in n) / (len(m) * len(n))
    assert membership_auc(m, n) == pytest.approx(pairs)


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
    from distill.train import run_training

    kw = dict(output_dir=str(out), packing=False, canary_repeats=16, canary_seed=7, validation_split_percentage=0,
              max_steps=30, per_device_train_batch_size=8, learning_rate=8e-3, alpha_kd=0.5, alpha_lm=1.0,
              lr_scheduler_type="constant", logging_steps=10)
    if dp:
        kw.update(dp_enabled=True, dp_noise_multiplier=1.0, dp_max_grad_norm=0.5)
    return run_training(tiny_args(**kw), texts=texts)


def test_dp_lowers_exposure_and_membership_inference(tiny_args, tmp_path, gpt2_tok):
    """Canary inserted 16x, 32 member records, 30 steps: without DP the model memorises; with DP (σ=1) it does not."""
    from distill.data import builtin_texts

    unique = list(dict.fromkeys(builtin_texts("tiny")))
    members, non_members = unique[:32], unique[100:132]
    canary = make_canary(7)
    results = {}
    for dp in (False, True):
        trainer = _run(tiny_args, members, tmp_path / f"dp{int(dp)}", dp)
        model = trainer.model
        lm = sequence_losses(model, gpt2_tok, members)
        ln = sequence_losses(model, gpt2_tok, non_members)
        exp = canary_exposure(model, gpt2_tok, canary, num_candidates=127, seed=0)
        results[dp] = (membership_auc(lm, ln), exp.exposure)
    (auc_plain, exp_plain), (auc_dp, exp_dp) = results[False], results[True]
    print("audit (auc, exposure):", results)
    assert exp_plain >= 5.0 and exp_plain > exp_dp + 3.0, results
    assert auc_plain >= 0.7 and auc_plain > auc_dp + 0.15, results
    assert (tmp_path / "dp1" / "privacy.json").exists()


def test_audit_command_writes_audit_json(tiny_teacher_dir, tmp_path):
    members, non_members = tmp_path / "m.txt", tmp_path / "n.txt"
    members.write_text("the nurse said she was tired.\nthe doctor said he was late.\n")
    non_members.write_text("a cat sat on the mat.\nthe sky is blue today.\n")
    out = tmp_path / "audit.json"
    res = subprocess.run([sys.executable, "-m", "distill", "audit", "--model", tiny_teacher_dir, "--members",
                          str(members), "--non-members", str(non_members), "--canary-seed", "7",
                          "--num-candidates", "15", "--output", str(out)],
                         capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert 0.0 <= report["membership_inference"]["auc"] <= 1.0
    c = report["canaries"][0]
    assert c["canary"] == make_canary(7) and 1 <= c["rank"] <= 16
    assert c["exposure"] == pytest.approx(math.log2(16) - math.log2(c["rank"]))
    bad = subprocess.run([sys.executable, "-m", "distill", "audit", "--model", tiny_teacher_dir, "--members",
                          str(members)], capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=300)
    assert bad.returncode == 2 and "--non-members" in bad.stderr and "Traceback" not in bad.stderr
