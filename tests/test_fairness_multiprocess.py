"""Fairness evaluation split across processes: the same report as one process, written once."""

import json

import pytest

from mp_helpers.launch import accelerate_launch

EVAL = ["--prompts", "builtin", "--occupations", "nurse,plumber,teacher,carpenter,secretary",
        "--max-prompts-per-group", "2", "--max-new-tokens", "6", "--batch-size", "3", "--no-plot", "--quiet"]


def test_per_prompt_sampling_does_not_depend_on_the_split(tiny_teacher_dir, gpt2_tok):
    """Sampling with prompt_ids: each prompt's draws come from its own seeds, so evaluating the prompts together,
    or as the two strided halves two processes get, or one at a time, gives the same continuations."""
    from distill.fairness.generation import generate_continuations
    from distill.fairness.sharding import shard_indices
    from distill.model_loading import load_causal_lm

    model = load_causal_lm(tiny_teacher_dir)
    texts = ["The nurse said that", "My father", "The engineer was", "She", "The plumber went to the"]
    kw = dict(max_new_tokens=6, num_return_sequences=2, do_sample=True, top_k=50, temperature=0.9, seed=3,
              progress=False)
    whole = generate_continuations(model, gpt2_tok, texts, batch_size=4, prompt_ids=list(range(5)), **kw)
    split = [None] * len(texts)
    for rank in (0, 1):
        idx = shard_indices(len(texts), rank, 2)
        outs = generate_continuations(model, gpt2_tok, [texts[i] for i in idx], batch_size=2, prompt_ids=idx, **kw)
        for i, out in zip(idx, outs):
            split[i] = out
    single = [generate_continuations(model, gpt2_tok, [t], batch_size=1, prompt_ids=[i], **kw)[0]
              for i, t in enumerate(texts)]
    assert whole == split == single
    assert any(a != b for a, b in whole)  # two samples of a prompt differ: it is sampling, not greedy
    other = generate_continuations(model, gpt2_tok, texts, batch_size=4, prompt_ids=list(range(5)),
                                   **{**kw, "seed": 4})
    assert other != whole


@pytest.mark.slow
def test_distill_evaluate_on_two_processes_equals_one_process(tmp_path, tiny_teacher_dir, capsys):
    """Greedy: `accelerate launch -m distill evaluate` on 2 processes gives the single-process report
    (co-occurrence scores to float precision, generations exactly); one process writes and prints. (Sampling
    under a split: test_per_prompt_sampling_does_not_depend_on_the_split.)"""
    from distill.cli import main

    for mode in (["--greedy"],):
        one, two = tmp_path / f"one{len(mode)}", tmp_path / f"two{len(mode)}"
        assert main(["evaluate", "--model", tiny_teacher_dir, *EVAL, *mode, "--output_dir", str(one)]) == 0
        res = accelerate_launch(["-m", "distill", "evaluate", "--model", tiny_teacher_dir, *EVAL, *mode,
                                 "--output_dir", str(two)], timeout=240)
        assert res.returncode == 0, res.stderr[-4000:]
        assert res.stdout.count("Wrote ") == 1  # the main process alone writes and prints
        a = json.loads((one / "fairness.json").read_text())
        b = json.loads((two / "fairness.json").read_text())
        gens = [[json.loads(line) for line in (d / "generations.jsonl").read_text().splitlines()] for d in (one, two)]
        samples = 1 if mode == ["--greedy"] else 2
        assert len(gens[0]) == a["num_prompts"] * samples and a["num_prompts"] >= 10
        assert gens[0] == gens[1]
        assert a["cooccurrence_bias_mean_abs"] is not None
        for key in ("cooccurrence_bias_mean_abs", "mean_parity", "min_parity"):  # parity: None if no gendered word
            assert b[key] == (None if a[key] is None else pytest.approx(a[key], rel=1e-5, abs=1e-7)), key
        for ra, rb in zip(a["per_profession"], b["per_profession"], strict=True):
            bias_a, bias_b = ra.pop("cooccurrence_bias"), rb.pop("cooccurrence_bias")
            assert bias_b == pytest.approx(bias_a, rel=1e-5, abs=1e-7)
            assert rb == ra  # counts and parity from the same generations
        assert b["sentiment_gap"] == a["sentiment_gap"]
