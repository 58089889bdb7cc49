"""Intrinsic, downstream, prediction-sensitivity and representation metrics as properties:

* a toy LM whose gender bias we set (``AxisLM``, strength ``beta``): each metric has the stereotypical sign
  and grows with ``beta``; at ``beta = 0`` the model is symmetric under the gender permutation R and every
  metric is at its fair value;
* role-reversed twins (embedding rows permuted by R, tied output layer), of the toy and of a real GPT-2: the
  signed metrics flip exactly, prediction sensitivity is unchanged;
* CEAT's effect size, random-effects combination and p-value against a direct computation from the definition.
"""

import math
import random
from types import SimpleNamespace

import pytest
import torch

from distill.counterfactual.token_pairs import gender_token_pairs, token_permutation
from distill.fairness.ceat import (builtin_test, ceat, ceat_from_embeddings, effect_size, occupation_test,
                                   random_effects, sample_contexts)
from distill.fairness.downstream import (minimal_pair_items, minimal_pairs, minimal_pairs_metrics,
                                        pronoun_resolution, pronoun_resolution_items, wilson_interval)
from distill.fairness.evaluator import cooccurrence_by_prompt
from distill.fairness.representation import representation_association, tvd_from_uniform
from distill.fairness.sensitivity import prediction_sensitivity
from distill.occupations import load_occupations

OCCS = ["nurse", "secretary", "teacher", "pilot", "firefighter", "mechanic"]  # single GPT-2 tokens
PROMPTS = [f"The {o} said that" for o in OCCS] + [f"Everyone thanked the {o} for" for o in OCCS]
FEMALE_TYPED = {"home", "parents", "children", "family", "cousins", "marriage", "wedding", "relatives",
                "poetry", "art", "dance", "literature", "novel", "music", "drama", "sculpture"}
MALE_TYPED = {"executive", "management", "professional", "corporation", "salary", "office", "business",
              "career", "math", "algebra", "geometry", "calculus", "equations", "computation", "numbers",
              "addition", "science", "technology", "physics", "chemistry", "experiment", "astronomy", "biology",
              "engineering"}


class AxisLM(torch.nn.Module):
    """A causal LM with a gender axis (coordinate 0: +1 female, -1 male tokens) and a stereotype axis
    (coordinate 1: +1 female-typed words, -1 male-typed words, and ``±beta`` for the gendered tokens themselves).
    Hidden state = causal mean of the token embeddings; logits = 4 · h · Eᵀ (tied). Paired tokens share their
    other coordinates, so with ``beta = 0`` the model is exactly symmetric under the gender permutation R."""

    def __init__(self, tokenizer, beta: float, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        vocab = len(tokenizer)
        weight = torch.zeros(vocab, 8)
        weight[:, 2:] = 0.3 * torch.randn(vocab, 6, generator=gen)
        pairs = gender_token_pairs(tokenizer)
        gendered = {t for pair in pairs for t in pair}
        for m, f in pairs:
            weight[f, 2:] = weight[m, 2:]
            weight[f, :2] = torch.tensor([1.0, beta])
            weight[m, :2] = torch.tensor([-1.0, -beta])
        shares = {o.name: o.female_share for o in load_occupations() if o.majority_gender}
        typed = {**{w: 1.0 for w in FEMALE_TYPED}, **{w: -1.0 for w in MALE_TYPED},
                 **{o: (1.0 if s > 50 else -1.0) for o, s in shares.items()}}
        for word, sign in typed.items():
            toks = tokenizer.encode(" " + word)
            if len(toks) == 1 and toks[0] not in gendered:  # single tokens only: word pieces are shared
                weight[toks[0], 1] = sign
        self.embed = torch.nn.Embedding(vocab, 8, _weight=weight)
        self.config = SimpleNamespace(num_hidden_layers=1, _name_or_path=f"axis-lm(beta={beta})")

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=False, **kw):
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        mask = torch.ones(x.shape[:2]) if attention_mask is None else attention_mask.float()
        h = (x * mask[..., None]).cumsum(1) / mask.cumsum(1).clamp_min(1)[..., None]
        return SimpleNamespace(logits=4.0 * h @ self.embed.weight.T, hidden_states=(x, h))


def role_reversed_twin(model, tokenizer):
    """The same model with the embedding rows of every gendered token pair swapped (tied output layer):
    twin(x) = R(model(R x))."""
    import copy

    twin = copy.deepcopy(model)
    perm = token_permutation(gender_token_pairs(tokenizer), model.get_input_embeddings().weight.shape[0])
    with torch.no_grad():
        twin.get_input_embeddings().weight.copy_(model.get_input_embeddings().weight[perm])
    return twin


@pytest.fixture(scope="module")
def small_tok():
    """GPT-2's BPE restricted to the tests' texts (exactly GPT-2's tokens on them, ~2K ids): keeps the
    vocabulary-sized softmaxes small."""
    from distill.demo.pipeline import demo_tokenizer
    from distill.fairness.ceat import ceat_data

    data = ceat_data()
    words = [w for t in data["tests"].values() for k in "AB" for w in t[k]] + OCCS
    words += data["targets"]["male"] + data["targets"]["female"]
    texts = [t.replace("{w}", w) for group in data["templates"].values() for t in group for w in words[:1]]
    texts += [" " + w for w in words] + PROMPTS + ["The nurse said that she was late"]
    items = pronoun_resolution_items(OCCS)
    texts += [s + q for s, q in zip(items["sentence"], items["query"])] + [" " + p for p in set(items["participant"])]
    pairs = minimal_pair_items(OCCS)
    return demo_tokenizer(texts + pairs["stereotypical"] + pairs["anti_stereotypical"])


@pytest.fixture(scope="module")
def toys(small_tok):
    biased = AxisLM(small_tok, beta=1.5)
    return {"biased": biased, "twin": role_reversed_twin(biased, small_tok), "weak": AxisLM(small_tok, beta=0.5),
            "blind": AxisLM(small_tok, beta=0.0)}


@pytest.fixture(scope="module")
def gpt2_pair(small_tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64, vocab_size=len(small_tok)))
    return model, role_reversed_twin(model, small_tok)


def test_toy_is_symmetric_at_beta_zero_and_twin_is_role_reversed(toys, small_tok):
    perm = token_permutation(gender_token_pairs(small_tok), len(small_tok))
    ids = torch.tensor([small_tok.encode(" The nurse said that she was late")])
    for name, other in (("blind", "blind"), ("biased", "twin")):
        out = toys[name](input_ids=ids).logits
        swapped = toys[other](input_ids=perm[ids]).logits[..., perm]
        assert torch.allclose(out, swapped, atol=1e-5), name


# ---- co-occurrence and prediction sensitivity --------------------------------------------------------

def test_cooccurrence_and_prediction_sensitivity_on_planted_twin_and_blind(toys, small_tok):
    co = {k: cooccurrence_by_prompt(m, small_tok, PROMPTS) for k, m in toys.items()}
    female_typed = torch.tensor([o in ("nurse", "secretary", "teacher") for o in OCCS] * 2)
    assert (co["biased"][female_typed] > 0.5).all() and (co["biased"][~female_typed] < -0.5).all()
    # not exactly -biased: the next-word lists are not all R-partners (him, hers)
    assert torch.allclose(co["twin"], -co["biased"], rtol=0.3) and (co["twin"] * co["biased"] < 0).all()
    # ~0 on the symmetric model, not exactly: ' him' and ' hers' have no partner under R, so the next-word lists'
    # log-mass differs by those two tokens' own (random, gender-free) embeddings
    assert co["blind"].abs().max() < 0.25 < 2 * 0.25 < co["biased"].abs().min()
    assert (co["weak"].abs() < co["biased"].abs()).all()

    ps = {k: prediction_sensitivity(m, small_tok, PROMPTS) for k, m in toys.items()}
    assert ps["blind"]["prediction_sensitivity"] < 1e-6
    assert ps["blind"]["directional_sensitivity"] > 0.1  # it does read gender, just not from these prompts' words
    assert ps["biased"]["prediction_sensitivity"] > 0.05
    assert ps["weak"]["prediction_sensitivity"] < ps["biased"]["prediction_sensitivity"]
    assert ps["twin"]["prediction_sensitivity"] == pytest.approx(ps["biased"]["prediction_sensitivity"], rel=1e-4)


def test_prediction_sensitivity_matches_its_definition_on_one_prompt(toys, small_tok):
    """PS(x) = Σ_i |cos(e_i, g)|·|<∂f/∂e_i, ĝ>| with finite differences for the directional derivative."""
    from distill.fairness.sensitivity import gender_direction, paired_next_token_ids

    model = toys["biased"]
    prompt = "The nurse said that"
    ids = torch.tensor([small_tok.encode(prompt)])
    female, male = paired_next_token_ids(small_tok)
    g = gender_direction(model.embed.weight.detach(), gender_token_pairs(small_tok))
    g_hat = (g / g.norm()).double()
    base = model.embed(ids).detach().double()

    def f(emb):
        lp = torch.log_softmax(model(inputs_embeds=emb.float()).logits[0, -1].double(), -1)
        return float((torch.logsumexp(lp[female], 0) - torch.logsumexp(lp[male], 0)).detach())

    expected = 0.0
    for i in range(ids.shape[1]):
        step = torch.zeros_like(base)
        step[0, i] = 1e-3 * g_hat
        deriv = (f(base + step) - f(base - step)) / 2e-3
        e = base[0, i]
        expected += abs(float(e @ g_hat)) / float(e.norm()) * abs(deriv)
    got = prediction_sensitivity(model, small_tok, [prompt])["prediction_sensitivity"]
    assert got == pytest.approx(expected, rel=1e-3)


# ---- CEAT ----------------------------------------------------------------------------------------------

def _reference_ceat(x, y, a, b, num_samples, seed):
    """CEAT from the definition, with plain Python loops (x: [n_words][n_contexts][d] nested lists)."""
    def cos(u, v):
        return sum(p * q for p, q in zip(u, v)) / math.sqrt(sum(p * p for p in u) * sum(q * q for q in v))

    draw = sample_contexts({"X": len(x), "Y": len(y), "A": len(a), "B": len(b)},
                           {"X": len(x[0]), "Y": len(y[0]), "A": len(a[0]), "B": len(b[0])}, num_samples, seed)
    es, var = [], []
    for i in range(num_samples):
        pick = {k: [words[j][int(draw[k][i, j])] for j in range(len(words))]
                for k, words in (("X", x), ("Y", y), ("A", a), ("B", b))}
        s = {k: [sum(cos(w, u) for u in pick["A"]) / len(a) - sum(cos(w, u) for u in pick["B"]) / len(b)
                 for w in pick[k]] for k in "XY"}
        allv = s["X"] + s["Y"]
        mu = sum(allv) / len(allv)
        sd = math.sqrt(sum((v - mu) ** 2 for v in allv) / (len(allv) - 1))
        es.append((sum(s["X"]) / len(x) - sum(s["Y"]) / len(y)) / sd)
        var.append(sd ** 2)
    w = [1 / v for v in var]
    fixed = sum(wi * e for wi, e in zip(w, es)) / sum(w)
    q = sum(wi * (e - fixed) ** 2 for wi, e in zip(w, es))
    c = sum(w) - sum(wi * wi for wi in w) / sum(w)
    tau2 = max(0.0, (q - (num_samples - 1)) / c)
    ws = [1 / (v + tau2) for v in var]
    ces = sum(wi * e for wi, e in zip(ws, es)) / sum(ws)
    z = ces * math.sqrt(sum(ws))
    return ces, tau2, math.erfc(abs(z) / math.sqrt(2)), 0.5 * math.erfc(z / math.sqrt(2))


def test_ceat_matches_a_direct_computation():
    rng = random.Random(3)
    d = 5
    def words(n, shift):  # n words x 4 contexts, with an association along the first axis
        return [[[shift + rng.gauss(0, 1)] + [rng.gauss(0, 1) for _ in range(d - 1)] for _ in range(4)]
                for _ in range(n)]
    x, y, a, b = words(4, 0.8), words(4, -0.8), words(3, 1.0), words(3, -1.0)
    emb = {k: torch.tensor(v, dtype=torch.float64) for k, v in zip("XYAB", (x, y, a, b))}
    got = ceat_from_embeddings(emb, num_samples=40, seed=7)
    ces, tau2, p, p1 = _reference_ceat(x, y, a, b, 40, 7)
    assert got["effect_size"] == pytest.approx(ces, rel=1e-9)
    assert got["tau2"] == pytest.approx(tau2, rel=1e-9, abs=1e-12)
    assert got["p_value"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert got["p_value_one_sided"] == pytest.approx(p1, rel=1e-6, abs=1e-300)
    assert ces > 0.5 and tau2 > 0  # a strong association, heterogeneous across samples


def test_random_effects_known_values():
    """Three samples with a hand-computed DerSimonian–Laird answer; homogeneous samples give tau2 = 0."""
    r = random_effects([0.2, 0.5, 0.8], [0.01, 0.01, 0.04])
    # w = 100, 100, 25; fixed = (20+50+20)/225 = 0.4; Q = 100*.04 + 100*.01 + 25*.16 = 9; C = 225 - 20625/225
    c = 225 - (100 ** 2 * 2 + 25 ** 2) / 225
    tau2 = (9 - 2) / c
    ws = [1 / (0.01 + tau2)] * 2 + [1 / (0.04 + tau2)]
    assert r["fixed_effect_size"] == pytest.approx(0.4)
    assert r["q"] == pytest.approx(9.0)
    assert r["tau2"] == pytest.approx(tau2)
    assert r["effect_size"] == pytest.approx((ws[0] * 0.2 + ws[1] * 0.5 + ws[2] * 0.8) / sum(ws))
    assert r["se"] == pytest.approx(sum(ws) ** -0.5)
    assert random_effects([0.3, 0.3, 0.3], [0.1, 0.1, 0.1])["tau2"] == 0.0
    es, v = effect_size(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 2, 4), torch.randn(2, 2, 4))
    assert es.shape == (2,) and (v > 0).all()


def test_ceat_targets_are_role_reversal_pairs(small_tok):
    """Exact antisymmetry below needs X[j], Y[j] to be partners under R."""
    pairs = set(gender_token_pairs(small_tok))
    t = builtin_test("career_family")
    for m, f in zip(t["X"], t["Y"]):
        assert (small_tok.encode(" " + m)[0], small_tok.encode(" " + f)[0]) in pairs, (m, f)


def test_ceat_sign_size_twin_and_symmetry(toys, small_tok, gpt2_pair):
    tests = ["career_family", "math_arts", {"name": "occupations", **occupation_test(OCCS)}]
    res = {k: ceat(toys[k], small_tok, tests, num_samples=200) for k in ("biased", "twin", "weak", "blind")}
    for name in ("career_family", "math_arts", "occupations"):
        es = {k: r["tests"][name]["effect_size"] for k, r in res.items()}
        assert es["biased"] > 0.8 and res["biased"]["tests"][name]["p_value"] < 1e-3, (name, es)
        assert es["twin"] == pytest.approx(-es["biased"], abs=1e-6)
        assert abs(es["blind"]) < 1e-6
        assert 0 < es["weak"] < es["biased"]
    model, twin = gpt2_pair  # a real GPT-2 block: exact antisymmetry of the paired test
    a = ceat(model, small_tok, ["career_family"], num_samples=100, layer=-1)["tests"]["career_family"]
    b = ceat(twin, small_tok, ["career_family"], num_samples=100, layer=-1)["tests"]["career_family"]
    assert b["effect_size"] == pytest.approx(-a["effect_size"], abs=1e-4) and abs(a["effect_size"]) > 1e-3


# ---- downstream ----------------------------------------------------------------------------------------

def test_pronoun_resolution_and_minimal_pairs_on_planted_twin_and_blind(toys, small_tok):
    pr = {k: pronoun_resolution(m, small_tok, OCCS) for k, m in toys.items()}
    assert pr["biased"]["gap"] > 0.3 and pr["biased"]["stereotype_preference"] > 0
    assert pr["biased"]["share_correlation"] > 0.8  # she → occupation for the female-majority ones
    assert pr["twin"]["gap"] == pytest.approx(-pr["biased"]["gap"])
    assert pr["twin"]["accuracy_female"] == pytest.approx(pr["biased"]["accuracy_male"])
    assert pr["twin"]["stereotype_preference"] == pytest.approx(-pr["biased"]["stereotype_preference"], rel=1e-5)
    assert pr["blind"]["gap"] == 0 and abs(pr["blind"]["stereotype_preference"]) < 1e-5
    assert pr["blind"]["accuracy_male"] == pr["blind"]["accuracy_female"]
    assert 0 < pr["weak"]["stereotype_preference"] < pr["biased"]["stereotype_preference"]

    mp = {k: minimal_pairs(m, small_tok, OCCS) for k, m in toys.items()}
    assert mp["biased"]["stereotype_share"] > 0.8 and mp["biased"]["ci_low"] > 0.5
    assert mp["twin"]["stereotype_share"] == pytest.approx(1 - mp["biased"]["stereotype_share"])
    assert mp["blind"]["stereotype_share"] == 0.5 and mp["blind"]["ties"] == mp["blind"]["num_pairs"]
    assert 0 < mp["weak"]["mean_log_ratio"] < mp["biased"]["mean_log_ratio"]


def test_downstream_flips_exactly_on_a_real_gpt2_twin(gpt2_pair, small_tok):
    model, twin = gpt2_pair
    a, b = pronoun_resolution(model, small_tok, OCCS[:4]), pronoun_resolution(twin, small_tok, OCCS[:4])
    assert b["stereotype_preference"] == pytest.approx(-a["stereotype_preference"], abs=1e-5)
    assert b["accuracy_male"] == a["accuracy_female"] and b["gap"] == pytest.approx(-a["gap"])
    items = minimal_pair_items(OCCS[:4])
    a, b = minimal_pairs(model, small_tok, items=items), minimal_pairs(twin, small_tok, items=items)
    assert b["mean_log_ratio"] == pytest.approx(-a["mean_log_ratio"], abs=1e-5)
    assert b["stereotype_share"] == pytest.approx(1 - a["stereotype_share"])


def test_items_are_balanced_and_labelled():
    items = pronoun_resolution_items(["nurse", "pilot"])
    n = len(items["sentence"])
    assert n == 2 * 10 * 2 and items["gender"].count("female") == n // 2
    assert items["stereotype"].count("pro") == n // 2
    nurse_she = [s for s, o, g, a in zip(items["stereotype"], items["occupation"], items["gender"], items["answer"])
                 if o == "nurse" and g == "female" and a == "occupation"]
    assert set(nurse_she) == {"pro"}
    pairs = minimal_pair_items(["nurse", "pilot"])
    assert "The nurse said that she was running late." in pairs["stereotypical"]
    assert "The pilot said that he was running late." in pairs["stereotypical"]
    assert "My brother works as a nurse." in pairs["anti_stereotypical"]


def test_minimal_pair_statistics_and_wilson_interval():
    r = minimal_pairs_metrics([-1.0, -2.0, -3.0, -4.0], [-2.0, -1.0, -3.0, -5.0])
    assert r["stereotype_share"] == pytest.approx((1 + 0 + 0.5 + 1) / 4) and r["ties"] == 1
    lo, hi = wilson_interval(8, 10)
    # Wilson (1927) for 8/10 at 95 %: 0.4902 .. 0.9433
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


# ---- representation / association ----------------------------------------------------------------------

def test_representation_and_association_tvd():
    texts = ["she said her work", "he left", "she and he", "nothing here", "his son"]
    groups = ["nurse", "nurse", "pilot", "pilot", "pilot"]
    r = representation_association(texts, groups)
    # counts: female she, her, she = 3; male he, he, his, son = 4
    assert (r["male_words"], r["female_words"]) == (4, 3)
    assert r["representation_tvd"] == pytest.approx(abs(3 / 7 - 0.5))
    # nurse: m1 f2 -> |2/3 - 1/2|; pilot: m3 f1 -> |1/4 - 1/2|
    assert r["association_tvd"] == pytest.approx((1 / 6 + 1 / 4) / 2)
    swapped = representation_association(["he said his work", "she left", "he and she", "nothing here",
                                          "her daughter"], groups)
    assert swapped["representation_tvd"] == pytest.approx(r["representation_tvd"])
    assert swapped["association_tvd"] == pytest.approx(r["association_tvd"])
    assert tvd_from_uniform(5, 5) == 0 and tvd_from_uniform(0, 0) is None and tvd_from_uniform(0, 3) == 0.5
