"""Fairness evaluation end to end: planted bias, batched generation, BOLD files, the training callback."""

import contextlib
import csv
import json
import os

import pytest
import torch
import yaml

from distill.cli import main
from distill.builtin.corpus import CorpusSpec, generate_corpus, planted_gender
from distill.errors import ConfigError
from distill.fairness.generation import generate_continuations, next_token_scores

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
OCCUPATIONS = ("nurse", "secretary", "carpenter", "plumber")


@contextlib.contextmanager
def single_thread():
    """Tiny models train fastest on one thread (and far faster on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def train_planted_lm(path, texts, tok, steps=300, seed=0):
    """A 1-layer GPT-2 (real 50257-token vocabulary) trained on ``texts``, one sentence a row.

    For speed the softmax is trained over the corpus's own tokens only (~100 of them); the trained rows are
    then placed into a full-vocabulary GPT-2 whose other embedding rows are zero (logit 0), and saved with
    the tokenizer (safetensors) so ``distill evaluate`` loads it like any model.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    enc = tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    vocab = torch.unique(torch.cat([ids.flatten(), torch.tensor([tok.eos_token_id])]))
    remap = torch.full((len(tok),), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    cids = remap[ids]
    labels = cids.masked_fill(mask == 0, -100)
    shape = dict(n_positions=64, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(seed)
    small = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), **shape))
    opt = torch.optim.AdamW(small.parameters(), lr=5e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    with single_thread():
        for _ in range(steps):
            i = torch.randint(0, len(ids), (32,), generator=gen)
            small(input_ids=cids[i], attention_mask=mask[i], labels=labels[i]).loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
    full = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, **shape))
    state = {k: v for k, v in small.state_dict().items() if not k.endswith("wte.weight") and "lm_head" not in k}
    with torch.no_grad():
        full.transformer.wte.weight.zero_()
        full.transformer.wte.weight[vocab] = small.transformer.wte.weight
    full.load_state_dict(state, strict=False)
    full.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def planted_models(tmp_path_factory, gpt2_tok):
    root = tmp_path_factory.mktemp("planted")
    out = {}
    for name, balanced in (("skewed", False), ("balanced", True)):
        texts = generate_corpus(CorpusSpec(num_documents=1000, skew=0.95, balanced=balanced, seed=0,
                                           occupations=OCCUPATIONS, filler_share=0.0, biography_share=0.0))
        out[name] = train_planted_lm(root / name, texts, gpt2_tok)
    return out


def _evaluate(model_dir, out_dir, *flags):
    rc = main(["evaluate", "--model", model_dir, "--output_dir", str(out_dir), "--quiet", *flags])
    assert rc == 0
    with open(os.path.join(out_dir, "fairness.json")) as fh:
        return json.load(fh)


def test_planted_bias_is_found_and_balanced_text_removes_it(planted_models, tmp_path, capsys):
    flags = ("--occupations", ",".join(OCCUPATIONS), "--metrics", "cooccurrence", "--no-plot")
    skewed = _evaluate(planted_models["skewed"], tmp_path / "skewed", *flags)
    balanced = _evaluate(planted_models["balanced"], tmp_path / "balanced", *flags)
    assert "co-occurrence bias" in capsys.readouterr().out  # the table went to stdout
    rows = {r["profession"]: r["cooccurrence_bias"] for r in skewed["per_profession"]}
    assert set(rows) == set(OCCUPATIONS)
    for occ, bias in rows.items():  # > 0: female words expected next
        direction = 1 if planted_gender(occ) == "female" else -1
        assert direction * bias > 0.7, (occ, bias)
    assert skewed["cooccurrence_bias_mean_abs"] > 0.7
    assert balanced["cooccurrence_bias_mean_abs"] < skewed["cooccurrence_bias_mean_abs"] / 4
    assert skewed["cooccurrence_share_correlation"] > 0.9
    for key in ("model", "mean_parity", "min_parity", "cooccurrence_bias_mean_abs", "sentiment_gap",
                "per_profession"):
        assert key in skewed
    assert skewed["mean_parity"] is None and "parity: not computed (metric not requested)" in skewed["notes"]


def test_batched_generation_equals_one_prompt_at_a_time(planted_models, gpt2_tok):
    from distill.model_loading import load_causal_lm

    model = load_causal_lm(planted_models["skewed"])
    model.train()  # the evaluator must restore this
    texts = ["The nurse said that", "Everyone thanked the plumber for", "The carpenter", "The",
             "The secretary was tired because she had worked all night and"]
    batched = generate_continuations(model, gpt2_tok, texts, max_new_tokens=6, do_sample=False, batch_size=5,
                                     progress=False)
    single = [generate_continuations(model, gpt2_tok, [t], max_new_tokens=6, do_sample=False, batch_size=1,
                                     progress=False)[0] for t in texts]
    assert batched == single
    assert sum(bool(c[0].strip()) for c in batched) >= 3  # real continuations, not all empty
    assert model.training
    lp = next_token_scores(model, gpt2_tok, texts, lambda x: x, batch_size=5)
    lp1 = torch.cat([next_token_scores(model, gpt2_tok, [t], lambda x: x) for t in texts])
    assert torch.allclose(lp, lp1, atol=1e-4)
    assert model.training
    assert gpt2_tok.padding_side == "right"  # the caller's tokenizer is left as it was


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(planted_models, gpt2_tok):
    from distill.model_loading import load_causal_lm

    model = load_causal_lm(planted_models["skewed"])
    state = torch.random.get_rng_state()
    a = generate_continuations(model, gpt2_tok, ["The nurse"], max_new_tokens=5, num_return_sequences=3,
                               seed=1, progress=False)
    b = generate_continuations(model, gpt2_tok, ["The nurse"], max_new_tokens=5, num_return_sequences=3,
                               seed=1, progress=False)
    assert a == b and len(a[0]) == 3
    assert torch.equal(torch.random.get_rng_state(), state)


def test_evaluate_reads_bold_files(planted_models, tmp_path):
    gender = _evaluate(planted_models["skewed"], tmp_path / "g", "--prompts",
                       "bold:" + os.path.join(FIXTURES, "bold_gender_prompt.json"), "--num-samples", "2",
                       "--max-new-tokens", "6", "--no-plot")
    assert gender["num_prompts"] == 6 and gender["num_gendered_prompts"] == 6
    gap = gender["sentiment_gap"]
    assert gap["n_male"] == 6 and gap["n_female"] == 6 and -2 <= gap["gap"] <= 2
    assert gender["classifier"] == "not computed (no classifier given)"
    assert gender["per_profession"] == []  # no gender-neutral prompts: nothing per profession
    assert any("no gender-neutral prompts" in n for n in gender["notes"])

    out = tmp_path / "p"
    prof = _evaluate(planted_models["skewed"], out, "--prompts",
                     "bold:" + os.path.join(FIXTURES, "bold_profession_prompt.json"), "--max-new-tokens", "6",
                     "--max-prompts-per-group", "2")
    groups = [r["profession"] for r in prof["per_profession"]]
    assert groups == ["metalworking_occupations", "nursing_specialties", "engineering_branches"]
    assert [r["num_prompts"] for r in prof["per_profession"]] == [2, 2, 1]
    assert all(r["cooccurrence_bias"] is not None for r in prof["per_profession"])
    with open(out / "per_profession.csv") as fh:
        assert [r["profession"] for r in csv.DictReader(fh)] == groups
    assert (out / "disparity.png").stat().st_size > 5000
    with open(out / "generations.jsonl") as fh:
        assert len(fh.readlines()) == 5


def test_unknown_metric_and_bad_prompts_are_clear_errors(planted_models, tmp_path, capsys):
    rc = main(["evaluate", "--model", planted_models["skewed"], "--metrics", "regard", "--output_dir", str(tmp_path)])
    assert rc == 2 and "Unknown fairness metric" in capsys.readouterr().err
    rc = main(["evaluate", "--model", planted_models["skewed"], "--prompts", "bold:nope.json"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_callback_metrics_in_trainer_state_after_distill_train(tiny_teacher_dir, tmp_path):
    from distill.fairness.callback import FairnessCallback

    out = tmp_path / "run"
    config = {
        "teacher_model_name_or_path": tiny_teacher_dir, "student_num_layers": 1, "dataset_name": "builtin:tiny",
        "block_size": 32, "max_train_samples": 200, "validation_split_percentage": 10, "output_dir": str(out),
        "max_steps": 4, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16, "logging_steps": 1,
        "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "no", "report_to": "none", "use_cpu": True,
        "disable_tqdm": True, "fairness": {"enabled": True, "max_prompts_per_group": 1},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 0
    with open(out / "trainer_state.json") as fh:
        history = json.load(fh)["log_history"]
    logged = [h for h in history if "fairness/cooccurrence_bias_mean_abs" in h]
    assert [h["step"] for h in logged] == [2, 4, 4]  # each evaluation, and the final one
    assert all(h["fairness/cooccurrence_bias_mean_abs"] >= 0 for h in logged)
    assert all("fairness/mean_parity" not in h for h in logged)  # generation metrics are opt-in
    train_logs = [h for h in history if "loss" in h]
    assert len(train_logs) == 4 and all("loss_kd" in h for h in train_logs)  # training logs intact
    with open(out / "fairness.json") as fh:
        final = json.load(fh)
    assert final["cooccurrence_bias_mean_abs"] == pytest.approx(logged[-1]["fairness/cooccurrence_bias_mean_abs"])
    with pytest.raises(ConfigError, match="Unknown fairness metric"):
        FairnessCallback(trainer=None, metrics=["bogus"])
