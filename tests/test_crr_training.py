"""Teacher-prediction perturbation in the trainer, on a tiny teacher with a planted gender bias."""

import math

import pytest
import torch

from distill.distillation.teacher_side import role_reversed_teacher_targets, split_output_layer
from distill.text_data import DistillationCollator
from distill.builtin.corpus import CorpusSpec, generate_corpus
from distill.distillation.train import build_trainer

MALE_OCCUPATIONS = ("carpenter", "electrician", "plumber", "mechanic", "pilot")
PROMPTS = [f"The {occ} said that" for occ in MALE_OCCUPATIONS]


def _skewed_texts(n=300):
    spec = CorpusSpec(num_documents=n, skew=0.95, filler_share=0.0, biography_share=0.0, seed=5,
                      occupations=MALE_OCCUPATIONS)
    return generate_corpus(spec)


@pytest.fixture(scope="module")
def biased_teacher_dir(tmp_path_factory):
    """A tiny GPT-2 (real vocab) trained on sentences where these occupations are 'he' 95% of the time."""
    from distill.builtin.tiny_models import TinyTeacherSpec, train_tiny_teacher

    spec = TinyTeacherSpec(n_layer=2, n_embd=32, n_head=2, steps=30, batch_size=8, block_size=16,
                           learning_rate=1e-2)
    return train_tiny_teacher(str(tmp_path_factory.mktemp("biased") / "t"), spec, texts=_skewed_texts(),
                              progress=False)


def _he_she_log_ratio(model, tok, temperature=1.0):
    """Mean over prompts of log p(' she') - log p(' he') for the next token."""
    he, she = tok.convert_tokens_to_ids("Ġhe"), tok.convert_tokens_to_ids("Ġshe")
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    last = enc["attention_mask"].sum(-1) - 1
    model.eval()
    with torch.no_grad():
        logits = model(**enc).logits
    lp = torch.log_softmax(logits[torch.arange(len(PROMPTS)), last] / temperature, -1)
    return (lp[:, she] - lp[:, he]).mean().item()


def _args(tmp_path, teacher, **kw):
    from distill.distillation.config import DistillationConfig

    base = dict(output_dir=str(tmp_path / "out"), teacher_model_name_or_path=teacher, student_num_layers=1,
                block_size=16, alpha_kd=1.0, alpha_lm=0.0, temperature=1.0, validation_split_percentage=0,
                eval_strategy="no", per_device_train_batch_size=8, learning_rate=1e-2, max_steps=1,
                logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return DistillationConfig(**base)


@pytest.fixture(scope="module")
def crr_trainer(biased_teacher_dir, tmp_path_factory):
    args = _args(tmp_path_factory.mktemp("crr"), biased_teacher_dir, perturbation="interpolate",
                 perturbation_lambda=0.3)
    return build_trainer(args, texts=_skewed_texts(40))


def test_mean_perturbation_equalises_he_and_she(crr_trainer):
    trainer = crr_trainer
    tok = trainer.processing_class
    assert _he_she_log_ratio(trainer.teacher, tok) < -1.0  # the teacher prefers "he" (p_he > e * p_she)
    enc = tok(PROMPTS[:1], return_tensors="pt")
    inputs = {**enc, "position_ids": torch.arange(enc["input_ids"].size(1))[None]}
    targets, _, n_swapped = role_reversed_teacher_targets(trainer.teacher, inputs, trainer.token_swapper,
                                                          temperature=2.0, mode="mean")
    assert n_swapped == 0  # a neutral prompt: x̃ == x, no second forward
    p = targets[0, -1].exp()
    he, she = tok.convert_tokens_to_ids("Ġhe"), tok.convert_tokens_to_ids("Ġshe")
    assert p[he].item() == pytest.approx(p[she].item(), rel=1e-5)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    plain = torch.log_softmax(trainer.teacher(**inputs).logits[0, -1] / 2.0, -1).exp()
    assert p[he].item() == pytest.approx((plain[he] + plain[she]).item() / 2, rel=1e-4)


def test_one_batched_teacher_forward_only_for_gendered_rows(crr_trainer):
    trainer = crr_trainer
    tok = trainer.processing_class
    texts = ["The pilot said that he was tired.", "The weather was cold in the morning.",
             "She lost her keys in the park today.", "A small cafe opened near the old bridge."]
    batch = DistillationCollator(tok.pad_token_id)([{"input_ids": tok(t)["input_ids"]} for t in texts])
    calls = []
    assert trainer._teacher_split is not None  # GPT-2 runs as body + output layer (prefix of x̃ skipped)
    hook = trainer.teacher.base_model.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    targets, _ = trainer.teacher_targets(batch)
    hook.remove()
    assert calls == [4 + 2]  # one forward: the 4 rows of x and the 2 rows of x̃ that differ
    # reference: separate, unbatched forwards on x and on x̃ = R(x)
    model_in = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    x_tilde = trainer.token_swapper.swap_tokens(batch["input_ids"])
    assert tok.decode(x_tilde[0][: batch["attention_mask"][0].sum()]) == "The pilot said that she was tired."
    with torch.no_grad():
        p = torch.log_softmax(trainer.teacher(**model_in).logits, -1).exp()
        q = torch.log_softmax(trainer.teacher(**{**model_in, "input_ids": x_tilde}).logits, -1).exp()
    expected = 0.7 * p + 0.3 * q[..., trainer.token_permutation]
    mask = batch["attention_mask"].bool()
    assert torch.allclose(targets.exp()[mask], expected[mask], atol=1e-5)


@pytest.mark.parametrize("mode,lam", [("mean", 0.5), ("interpolate", 0.3), ("max", 0.5)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_split_teacher_skipping_the_shared_prefix_is_exact(crr_trainer, mode, lam, temperature):
    trainer = crr_trainer
    tok = trainer.processing_class
    texts = ["The weather was cold and the pilot said that he was tired.", "The weather was cold in the morning.",
             "She lost her keys in the park today.", "A small cafe opened near the old bridge where his mother "
             "lived."]
    batch = DistillationCollator(tok.pad_token_id)([{"input_ids": tok(t)["input_ids"]} for t in texts])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    kw = dict(temperature=temperature, mode=mode, lam=lam, need_hidden=True)
    fast, h_fast, n_fast = role_reversed_teacher_targets(trainer.teacher, inputs, trainer.token_swapper,
                                                         split=trainer._teacher_split, **kw)
    full, h_full, n_full = role_reversed_teacher_targets(trainer.teacher, inputs, trainer.token_swapper, **kw)
    mask = batch["attention_mask"].bool()
    assert n_fast == n_full == 3
    assert torch.allclose(fast[mask], full[mask], atol=1e-5)
    assert torch.allclose(h_fast, h_full, atol=1e-6)


def test_plain_kd_targets_through_the_split_teacher_equal_the_forward(biased_teacher_dir, tmp_path):
    trainer = build_trainer(_args(tmp_path, biased_teacher_dir, temperature=2.0, alpha_cos=0.5),
                            texts=_skewed_texts(20))
    assert trainer._teacher_split is not None
    tok = trainer.processing_class
    batch = DistillationCollator(tok.pad_token_id)([{"input_ids": tok(t)["input_ids"]} for t in _skewed_texts(3)])
    logprobs, hidden = trainer.teacher_targets(batch, need_hidden=True)
    with torch.no_grad():
        out = trainer.teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")},
                              output_hidden_states=True)
    assert torch.allclose(logprobs, torch.log_softmax(out.logits / 2.0, -1), atol=1e-5)
    assert torch.equal(hidden, out.hidden_states[-1])


def test_split_output_layer_refuses_models_whose_forward_does_more(biased_teacher_dir):
    from transformers import GPT2LMHeadModel

    class ScaledLogits(GPT2LMHeadModel):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 0.5  # like a logit scale or soft-capping
            return out

    plain = GPT2LMHeadModel.from_pretrained(biased_teacher_dir).eval()
    body, head = split_output_layer(plain)
    assert body is plain.transformer and head is plain.lm_head
    assert split_output_layer(ScaledLogits.from_pretrained(biased_teacher_dir).eval()) is None


def test_perturbation_moves_the_student_toward_parity(biased_teacher_dir, tmp_path):
    texts = _skewed_texts()
    ratios = {}
    for mode in ("none", "mean"):
        args = _args(tmp_path / mode, biased_teacher_dir, perturbation=mode, max_steps=10,
                     per_device_train_batch_size=4)
        trainer = build_trainer(args, texts=texts)
        before = _he_she_log_ratio(trainer.model, trainer.processing_class)
        trainer.train()
        ratios[mode] = _he_she_log_ratio(trainer.model, trainer.processing_class)
        if mode == "mean":
            logged = [h for h in trainer.state.log_history if "crr_swapped_share" in h]
            assert logged and all(0.5 < h["crr_swapped_share"] <= 1.0 for h in logged)
    # plain KD keeps the teacher's bias; perturbation moves p(she)/p(he) toward 1 (log ratio toward 0)
    assert ratios["none"] < -1.0, ratios
    assert abs(ratios["mean"]) < abs(ratios["none"]) - 0.7, (before, ratios)
    assert math.exp(ratios["mean"]) > 2 * math.exp(ratios["none"])
