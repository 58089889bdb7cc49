import json


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
        rc = main(["demo", "--quick", "--out", str(out)])
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
