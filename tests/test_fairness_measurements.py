"""The shipped `evaluate` measurement modules load offline from the package and give the pure functions'
results; `distill evaluate --suite all` compares several models in one table, plot and fairness.json each."""

import json
import os

import pytest

import evaluate  # a dependency: never skipped


@pytest.fixture(scope="module")
def toy():
    """The planted-bias toy LM of test_fairness_families on GPT-2's BPE restricted to these tests' texts."""
    from test_fairness_families import AxisLM

    tok = _small_tok()
    return AxisLM(tok, beta=1.5), tok


def _small_tok():
    from distill.demo.pipeline import demo_tokenizer
    from distill.fairness.ceat import ceat_inputs
    from distill.fairness.downstream import minimal_pair_items, pronoun_resolution_items

    occs = ["nurse", "pilot"]
    items = pronoun_resolution_items(occs)
    pairs = minimal_pair_items(occs)
    words = ceat_inputs("career_family")["word"]
    return demo_tokenizer([s + q for s, q in zip(items["sentence"], items["query"])] + [" " + w for w in words]
                          + pairs["stereotypical"] + pairs["anti_stereotypical"] + [" customer", " visitor"])


def test_measurement_paths_are_package_folders():
    from distill.errors import DistillError
    from distill.fairness import MEASUREMENTS, measurement_path

    for name in MEASUREMENTS:
        path = measurement_path(name)
        assert os.path.isfile(os.path.join(path, f"{name}.py")) and os.path.isfile(os.path.join(path, "README.md"))
    with pytest.raises(DistillError, match="choose from"):
        measurement_path("nope")


def test_measurements_load_offline_and_match_the_functions(toy, monkeypatch):
    from distill.fairness import measurement_path
    from distill.fairness.ceat import ceat, ceat_inputs
    from distill.fairness.downstream import (minimal_pair_items, minimal_pairs, pronoun_resolution,
                                            pronoun_resolution_items)
    from distill.fairness.evaluator import cooccurrence_by_prompt
    from distill.fairness.sensitivity import prediction_sensitivity

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = toy
    occs = ["nurse", "pilot"]
    load = lambda name: evaluate.load(measurement_path(name))  # noqa: E731

    got = load("ceat").compute(**ceat_inputs("career_family"), model=model, tokenizer=tok, num_samples=50)
    want = ceat(model, tok, ["career_family"], num_samples=50)["tests"]["career_family"]
    assert got["effect_size"] == pytest.approx(want["effect_size"]) and got["effect_size"] > 0.5
    assert got["p_value"] == pytest.approx(want["p_value"], abs=1e-12)

    got = load("pronoun_resolution").compute(**pronoun_resolution_items(occs), model=model, tokenizer=tok)
    assert got["gap"] == pytest.approx(pronoun_resolution(model, tok, occs)["gap"]) and got["gap"] > 0

    pairs = minimal_pair_items(occs)
    got = load("minimal_pairs").compute(**pairs, model=model, tokenizer=tok)
    assert got["stereotype_share"] == pytest.approx(minimal_pairs(model, tok, occs)["stereotype_share"])
    assert got["ci_low"] <= got["stereotype_share"] <= got["ci_high"]

    prompts = ["The nurse said that", "The pilot said that"]
    got = load("prediction_sensitivity").compute(prompt=prompts, group=occs, model=model, tokenizer=tok)
    assert got["prediction_sensitivity"] == pytest.approx(
        prediction_sensitivity(model, tok, prompts)["prediction_sensitivity"]) and got["prediction_sensitivity"] > 0

    got = load("cooccurrence_bias").compute(prompt=prompts, group=occs, model=model, tokenizer=tok)
    want = cooccurrence_by_prompt(model, tok, prompts).tolist()
    assert got["per_group"] == pytest.approx(dict(zip(occs, want)))
    assert got["per_group"]["nurse"] > 0 > got["per_group"]["pilot"]

    got = load("representation").compute(text=["she said", "he and he"], group=["a", "b"])
    assert got["representation_tvd"] == pytest.approx(abs(1 / 3 - 0.5)) and got["association_tvd"] == 0.5


def test_measurement_without_a_model_is_one_clear_error():
    from distill.errors import DistillError
    from distill.fairness import measurement_path

    with pytest.raises(DistillError, match="Pass model="):
        evaluate.load(measurement_path("minimal_pairs")).compute(stereotypical=["a"], anti_stereotypical=["b"])


def test_evaluate_suite_all_compares_models(tmp_path, tiny_teacher_dir, run_cli):
    """Two models, every family, CI-sized: one table, one comparison plot, a fairness.json each."""
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(tiny_teacher_dir, other)
    out = tmp_path / "report"
    rc, stdout, err = run_cli("evaluate", "--model", tiny_teacher_dir, "--model", other, "--suite", "all",
                              "--occupations", "nurse,pilot", "--ceat-tests", "career_family,occupations",
                              "--ceat-samples", "50", "--metrics", "cooccurrence,parity", "--max-new-tokens", "4",
                              "--quiet", "--output_dir", out)
    assert rc == 0, err[-3000:]
    assert "CEAT ES" in stdout and "pronoun gap" in stdout and "stereo pairs" in stdout
    assert (out / "comparison.png").stat().st_size > 5000
    reports = [json.loads((out / d / "fairness.json").read_text()) for d in ("tiny", "copy")]
    for r in reports:
        assert set(r["suite"]) == {"generation", "intrinsic", "downstream"}
        assert set(r["intrinsic"]["ceat"]["tests"]) == {"career_family", "occupations"}
        assert r["downstream"]["minimal_pairs"]["num_pairs"] == 2 * 8
        assert r["prediction_sensitivity"]["num_prompts"] == 2 * 6
        assert r["representation"] is not None and r["cooccurrence_bias_mean_abs"] is not None
    # same weights, same numbers: the report depends on the model only
    assert reports[0]["intrinsic"] == reports[1]["intrinsic"] and reports[0]["downstream"] == reports[1]["downstream"]


def test_evaluate_rejects_an_unknown_ceat_test(tmp_path, tiny_teacher_dir, capsys):
    from distill.cli import main

    rc = main(["evaluate", "--model", tiny_teacher_dir, "--suite", "intrinsic", "--ceat-tests", "nope", "--quiet",
               "--output_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "Unknown CEAT test 'nope'" in err and "Traceback" not in err
