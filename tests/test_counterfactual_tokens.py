import math

import pytest
import torch

from distill.counterfactual.lexicon import load_lexicon
from distill.counterfactual.perturbation import perturb_log_probs, reverse_roles
from distill.counterfactual.token_pairs import TokenSwapper, gender_token_pairs, token_permutation


@pytest.fixture(scope="module")
def swapper(gpt2_tok):
    return TokenSwapper.from_tokenizer(gpt2_tok)


def _tok(tok, piece):
    return tok.convert_tokens_to_ids(piece)


def test_gpt2_pairs_are_found(gpt2_tok):
    pairs = set(gender_token_pairs(gpt2_tok))
    for male, female in [("Ġhe", "Ġshe"), ("ĠHe", "ĠShe"), ("Ġhis", "Ġher"), ("Ġhimself", "Ġherself"),
                         ("Ġman", "Ġwoman"), ("Ġking", "Ġqueen"), ("he", "she"), ("Ġmen", "Ġwomen")]:
        assert (_tok(gpt2_tok, male), _tok(gpt2_tok, female)) in pairs, (male, female)
    ids = [i for p in pairs for i in p]
    assert len(ids) == len(set(ids))  # each token in at most one pair
    assert all(len(gpt2_tok.decode([i]).strip()) > 1 for i in ids)
    # "Ġhim" would need "Ġher", already paired with "Ġhis": no partner in R
    assert _tok(gpt2_tok, "Ġhim") not in ids


def test_r_is_an_involutive_permutation(swapper, gpt2_tok):
    perm = swapper.perm
    assert perm.dtype == torch.long and perm.shape == (len(gpt2_tok),)
    assert torch.equal(perm[perm], torch.arange(len(perm)))
    assert torch.equal(torch.sort(perm).values, torch.arange(len(perm)))
    assert swapper.num_pairs == len(gender_token_pairs(gpt2_tok)) > 60
    he, she = _tok(gpt2_tok, "Ġhe"), _tok(gpt2_tok, "Ġshe")
    assert perm[he] == she and perm[she] == he
    with pytest.raises(ValueError, match="two pairs"):
        token_permutation([(1, 2), (2, 3)], 10)


def test_user_pairs_reach_the_token_level(gpt2_tok):
    lex = load_lexicon(extra_pairs=(("dog", "cat"),))
    pairs = set(gender_token_pairs(gpt2_tok, lex))
    assert (_tok(gpt2_tok, "Ġdog"), _tok(gpt2_tok, "Ġcat")) in pairs


def test_swap_tokens_keeps_length_and_word_boundaries(swapper, gpt2_tok):
    text = 'He said that he loved his job. (he) "She" the theme; Athens, manifold, the man.'
    ids = torch.tensor([gpt2_tok(text)["input_ids"]])
    out = swapper.swap_tokens(ids)
    assert out.shape == ids.shape
    assert gpt2_tok.decode(out[0]) == 'She said that she loved her job. (she) "He" the theme; Athens, manifold, the woman.'
    assert torch.equal(swapper.swap_tokens(out), ids)  # involution at token level
    neutral = torch.tensor([gpt2_tok("The nurse said that the weather was cold.")["input_ids"]])
    assert torch.equal(swapper.swap_tokens(neutral), neutral)


def _random_logprobs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=g) * 3, dim=-1)


@pytest.mark.parametrize("mode", ["none", "mean", "max", "interpolate"])
def test_perturbed_targets_are_distributions(mode):
    p, q = _random_logprobs((2, 3, 50), 0), _random_logprobs((2, 3, 50), 1)
    out = perturb_log_probs(p, q, mode, lam=0.3)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 3), atol=1e-5)
    P, Q = p.exp(), q.exp()
    expected = {"none": P, "mean": (P + Q) / 2, "interpolate": 0.7 * P + 0.3 * Q,
                "max": torch.maximum(P, Q) / torch.maximum(P, Q).sum(-1, keepdim=True)}[mode]
    assert torch.allclose(out.exp(), expected, atol=1e-6)


def test_perturbation_is_stable_on_tiny_probabilities():
    p = torch.tensor([[0.0, -200.0, -1e4]]).log_softmax(-1)
    q = torch.tensor([[-1e4, -200.0, 0.0]]).log_softmax(-1)
    out = perturb_log_probs(p, q, "mean")
    assert torch.isfinite(out).all()
    assert out[0, 1].item() == pytest.approx(-200.0, abs=1e-3)  # exact in log space, exp() would be 0
    assert perturb_log_probs(p, q, "interpolate", lam=0.0) is p
    assert torch.equal(perturb_log_probs(p, q, "interpolate", lam=1.0), q)
    assert out[0, 0].item() == pytest.approx(math.log(0.5), abs=1e-5)


def test_reverse_roles_swaps_gendered_entries_back():
    perm = token_permutation([(0, 3)], 5)
    lp = torch.log(torch.tensor([[0.5, 0.1, 0.1, 0.2, 0.1]]))
    assert torch.allclose(reverse_roles(lp, perm).exp(), torch.tensor([[0.2, 0.1, 0.1, 0.5, 0.1]]))
    # mean of P and R(P): the two entries of a pair become equal, the rest stays
    mean = perturb_log_probs(lp, reverse_roles(lp, perm), "mean").exp()
    assert torch.allclose(mean, torch.tensor([[0.35, 0.1, 0.1, 0.35, 0.1]]))


@pytest.mark.parametrize("mode", ["mean", "max", "interpolate"])
@pytest.mark.parametrize("swapped_rows", [[], [1], [0, 2, 3], [0, 1, 2, 3]])
def test_row_wise_fast_path_equals_the_full_formula(mode, swapped_rows):
    from distill.counterfactual.perturbation import counterfactual_targets, perturb_swapped_rows

    V = 40
    perm = token_permutation([(1, 7), (3, 4), (10, 30)], V)
    gendered = (perm != torch.arange(V)).nonzero()[:, 0]
    p = _random_logprobs((4, 5, V), 2)
    rows = torch.tensor(swapped_rows, dtype=torch.long)
    q = _random_logprobs((len(swapped_rows), 5, V), 3)
    source = p.clone()
    source[rows] = q
    expected = counterfactual_targets(p, source, perm, mode, 0.25)
    p_before = p.clone()
    fast = perturb_swapped_rows(p, q, rows, perm, gendered, mode, 0.25)
    assert torch.equal(p, p_before)  # not in place unless asked
    assert torch.allclose(fast, expected, atol=1e-5)
    assert torch.allclose(perturb_swapped_rows(p.clone(), q.clone(), rows, perm, gendered, mode, 0.25,
                                               inplace=True), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "interpolate"])
def test_segment_path_equals_the_full_formula(mode):
    """Teacher outputs on x̃ only from each row's first swapped position: before it, x̃'s outputs are P."""
    from distill.counterfactual.perturbation import counterfactual_targets, perturb_swapped_segments

    V, T = 40, 6
    perm = token_permutation([(1, 7), (3, 4), (10, 30)], V)
    gendered = (perm != torch.arange(V)).nonzero()[:, 0]
    p = _random_logprobs((4, T, V), 2)
    rows, starts = [0, 2, 3], [0, 3, 5]
    source = p.clone()
    fresh = _random_logprobs((len(rows), T, V), 3)
    for j, (r, start) in enumerate(zip(rows, starts)):
        source[r, start:] = fresh[j, start:]
    expected = counterfactual_targets(p, source, perm, mode, 0.25)
    segments = [fresh[j, start:].clone() for j, start in enumerate(starts)]
    got = perturb_swapped_segments(p.clone(), segments, rows, starts, perm, gendered, mode, 0.25)
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="mean and interpolate"):
        perturb_swapped_segments(p.clone(), segments, rows, starts, perm, gendered, "max", 0.25)
