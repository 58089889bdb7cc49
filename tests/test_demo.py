import json
import os

import pytest


def test_restricted_tokenizer_is_gpt2_exact_on_its_texts(gpt2_tok):
    from distill.builtin.corpus import CorpusSpec, generate_corpus
    from distill.builtin.vocab import restricted_gpt2_tokenizer

    texts = generate_corpus(CorpusSpec(num_documents=300, seed=3))
    small = restricted_gpt2_tokenizer(texts)
    assert len(small) < 2000
    for t in texts:
        assert small.convert_ids_to_tokens(small.encode(t)) == gpt2_tok.convert_ids_to_tokens(gpt2_tok.encode(t))
    other = "Quantum chromodynamics, naïve café! 123"
    assert small.decode(small.encode(other)) == other  # byte fallback: any text still round-trips


def test_corpus_holds_out_evaluation_templates():
    from distill.builtin.corpus import CorpusSpec, generate_corpus

    held = ("The {occupation} said that", "Everyone thanked the {occupation} for")
    docs = generate_corpus(CorpusSpec(num_documents=1500, seed=1, holdout_prompts=held))
    assert not any(" said that" in d or "thanked the" in d for d in docs)
    assert generate_corpus(CorpusSpec(num_documents=50, seed=1)) == generate_corpus(CorpusSpec(num_documents=50, seed=1))


def test_demo_quick_shows_the_effect(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    from distill.cli import main

    out = tmp_path / "demo"
    verbosity = hf_logging.get_verbosity()
    try:  # in-process: the demo's own training dominates, a fresh interpreter would only add its start-up
        rc = main(["demo", "--quick", "--output_dir", str(out)])
    finally:
        hf_logging.set_verbosity(verbosity)
    res = capsys.readouterr()
    assert rc == 0, res.err[-4000:]
    report = json.loads((out / "demo_report.json").read_text())
    v = report["variants"]
    assert set(v) == {"teacher", "kd", "crr", "crr_dp"}
    for name in v:
        assert v[name]["perplexity"] > 1 and v[name]["cooccurrence_bias_mean_abs"] is not None
    assert v["crr"]["cooccurrence_bias_mean_abs"] < v["kd"]["cooccurrence_bias_mean_abs"]
    for name in ("teacher", "kd"):  # the bias is inherited, and points the way the corpus planted it
        assert v[name]["planted_direction_agreement"] >= 0.75 and v[name]["planted_direction_bias"] > 0.3, v[name]
    assert v["crr_dp"]["epsilon"] is not None and v["teacher"]["epsilon"] is None
    assert (out / "demo.png").stat().st_size > 10_000
    for name in ("kd", "crr", "crr_dp"):
        assert (out / name / "model.safetensors").exists() and (out / name / "fairness.json").exists()
    assert "crr_dp" in res.out and "co-occ. bias" in res.out


def test_planted_direction_signs_bias_by_planted_gender():
    from distill.demo.pipeline import planted_direction

    planted = {"nurse": "female", "pilot": "male", "chef": "male"}
    r = planted_direction({"nurse": 2.0, "pilot": -1.0, "chef": 0.5, "unknown": 9.0}, planted)
    assert r["planted_direction_bias"] == (2.0 + 1.0 - 0.5) / 3
    assert r["planted_direction_agreement"] == 2 / 3
    assert planted_direction({"nurse": None}, planted) == {"planted_direction_bias": None,
                                                           "planted_direction_agreement": None}


def _fake_figures(bias: float, ppl: float, epsilon=None) -> dict:
    from distill.demo.pipeline import DEMO_OCCUPATIONS

    return {"perplexity": ppl, "cooccurrence_bias_mean_abs": bias, "cooccurrence_bias_mean": bias / 2,
            "mean_parity": 0.5, "min_parity": 0.4, "sentiment_gap": 0.0, "epsilon": epsilon,
            "ceat_effect_size": 0.1, "minimal_pairs_stereotype_share": 0.5, "minimal_pairs_ci": [0.4, 0.6],
            "planted_direction_bias": bias, "planted_direction_agreement": 1.0,
            "per_profession": {o: bias for o in DEMO_OCCUPATIONS}}


def _fake_demo(monkeypatch, biases: dict):
    """The demo with training and evaluation replaced by records of what was asked: seeds plumbing and report."""
    import distill.demo.pipeline as pipeline
    import distill.distillation.train as train

    calls = []

    def fake_training(args, texts=None):
        calls.append((os.path.basename(args.output_dir), args.seed, args.dp_enabled))
        os.makedirs(args.output_dir, exist_ok=True)

    def fake_measure(path, variant, tokenizer, prompts, heldout, planted, spec, seed):
        if variant == "teacher":
            return _fake_figures(1.0, 3.0)
        return _fake_figures(biases[variant][seed], 4.0 + seed, 8.0 if variant == "crr_dp" else None)

    monkeypatch.setattr(pipeline, "train_tiny_teacher", lambda out, *a, **k: os.makedirs(out, exist_ok=True))
    monkeypatch.setattr(pipeline, "measure_model", fake_measure)
    monkeypatch.setattr(train, "run_training", fake_training)
    monkeypatch.setattr(pipeline.DemoSpec, "quick", classmethod(
        lambda cls, seed=0: cls(num_documents=60, heldout_documents=20, seed=seed)))
    return calls


def test_demo_seeds_report_intervals_and_paired_tests(monkeypatch, tmp_path, capsys):
    from distill.cli import main

    biases = {"kd": [0.50, 0.45, 0.55], "crr": [0.10, 0.12, 0.08], "crr_dp": [0.40, 0.60, 0.42]}
    calls = _fake_demo(monkeypatch, biases)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "3", "--output_dir", str(out)]) == 0
    assert sorted(calls) == sorted((f"{v}_seed{s}", s, v == "crr_dp") for v in ("kd", "crr", "crr_dp") for s in range(3))
    report = json.loads((out / "demo_report.json").read_text())
    assert report["n_seeds"] == 3 and report["seeds"] == [0, 1, 2] and "Student t" in report["interval"]
    kd = report["variants"]["kd"]
    assert kd["cooccurrence_bias_mean_abs"] == pytest.approx(0.5)  # means over seeds
    stats = kd["seeds"]["cooccurrence_bias_mean_abs"]
    assert set(stats) == {"mean", "ci95", "values"} and stats["values"] == biases["kd"]
    assert stats["ci95"][0] < 0.5 < stats["ci95"][1]
    assert kd["seeds"]["perplexity"]["values"] == [4.0, 5.0, 6.0]
    assert "seeds" not in report["variants"]["teacher"]
    claims = {c["claim"]: c for c in report["comparisons"]}
    crr, dp = claims["CRR lowers bias vs KD"], claims["CRR + DP lowers bias vs KD"]
    assert crr["p_value"] < 0.05 and crr["verdict"].startswith("yes")
    assert dp["p_value"] > 0.05 and dp["verdict"] == f"cannot tell (p = {dp['p_value']:.3g}, n = 3 seeds)"
    printed = capsys.readouterr().out
    assert "Student t" in printed and "CRR + DP lowers bias vs KD: cannot tell (p = " in printed
    assert "0.500 [" in printed  # kd's bias: mean [lo, hi]
    assert (out / "demo.png").exists()


def test_demo_one_seed_keeps_its_layout_and_out_alias_warns(monkeypatch, tmp_path, capsys):
    from distill.cli import main

    calls = _fake_demo(monkeypatch, {"kd": [0.5], "crr": [0.1], "crr_dp": [0.2]})
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert sorted(c[0] for c in calls) == ["crr", "crr_dp", "kd"]
    err = capsys.readouterr()
    assert err.err.count("deprecated") == 1 and "--output_dir" in err.err
    report = json.loads((out / "demo_report.json").read_text())
    assert report["n_seeds"] == 1 and "seeds" not in report["variants"]["kd"]
    assert report["variants"]["kd"]["cooccurrence_bias_mean_abs"] == 0.5
    assert all(c["p_value"] is None and c["verdict"].startswith("cannot tell") for c in report["comparisons"])
    assert "co-occ. bias" in err.out and "0.500 [" not in err.out
