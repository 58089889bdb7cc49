"""Fairness metrics: hand-computed values and edge cases."""

import math

import pytest
import torch

from distill.fairness import metrics as M
from distill.fairness.lexicon import FEMALE_NEXT_WORDS, MALE_NEXT_WORDS, gendered_next_token_ids


@pytest.mark.parametrize("text, counts, label", [
    ("She said her brother was late.", (1, 2), "female"),     # brother | she, her
    ("He told his wife that he was tired", (3, 1), "male"),    # he, his, he | wife
    ("The weather was cold in the morning.", (0, 0), "neutral"),
    ("He and she", (1, 1), "neutral"),                          # tie
    ("SHE! HIS? Mr. Smith", (2, 1), "male"),                    # case-insensitive, punctuation
    ("Sherlock and Hector heard them", (0, 0), "neutral"),      # whole words only
])
def test_gender_polarity(text, counts, label):
    assert M.gender_word_counts(text) == counts
    assert M.gender_polarity(text) == label


def test_parity_hand_values_and_edges():
    assert M.parity(4, 2) == 0.5
    assert M.parity(2, 4) == 0.5
    assert M.parity(3, 3) == 1.0
    assert M.parity(5, 0) == 0.0 and M.parity(0, 5) == 0.0  # one side zero
    assert M.parity(0, 0) is None                           # both zero: undefined
    with pytest.raises(ValueError):
        M.parity(-1, 2)


def test_parity_summary_ignores_undefined():
    assert M.parity_summary([0.5, None, 1.0, 0.0]) == (0.5, 0.0)
    assert M.parity_summary([None, None]) == (None, None)


def test_cooccurrence_bias_hand_computed():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    lp = probs.log()
    bias = M.cooccurrence_bias(lp, female_ids=[0, 1], male_ids=[3])
    assert bias[0].item() == pytest.approx(math.log(0.3) - math.log(0.4))
    assert bias[1].item() == pytest.approx(math.log(0.5 / 0.25))
    # invariant to the normalisation of the log-probabilities (a ratio)
    assert torch.allclose(M.cooccurrence_bias(lp + 3.0, [0, 1], [3]), bias)
    # symmetric: swapping the lists flips the sign
    assert torch.allclose(M.cooccurrence_bias(lp, [3], [0, 1]), -bias)


def test_mean_abs_and_pearson():
    assert M.mean_abs([1.0, -3.0, None]) == 2.0
    assert M.mean_abs([]) is None
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M.pearson([1, 2], [1, 2]) is None
    assert M.pearson([1, 1, 1], [1, 2, 3]) is None


def test_sentiment_gap_hand_computed():
    gap = M.sentiment_gap([0.5, -0.5, 0.9], [0.0, 0.1])
    assert gap["mean_male"] == pytest.approx(0.3)
    assert gap["mean_female"] == pytest.approx(0.05)
    assert gap["gap"] == pytest.approx(0.25)
    assert gap["positive_rate_male"] == pytest.approx(2 / 3)
    assert gap["positive_rate_female"] == pytest.approx(0.5)   # 0.1 >= 0.05, 0.0 is not
    assert gap["positive_rate_gap"] == pytest.approx(2 / 3 - 0.5)
    empty = M.sentiment_gap([], [0.2])
    assert empty["gap"] is None and empty["mean_female"] == pytest.approx(0.2)


def test_vader_scores_sign():
    good, bad, flat = M.sentiment_scores(["She is a wonderful, kind and brilliant doctor.",
                                          "He is a terrible, cruel and awful boss.", "The door is brown."])
    assert good > 0.5 and bad < -0.5 and flat == 0.0


def test_gendered_next_token_ids_are_single_leading_space_tokens(gpt2_tok):
    female, male = gendered_next_token_ids(gpt2_tok)
    assert gpt2_tok.convert_ids_to_tokens(female[:3]) == ["Ġshe", "Ġher", "Ġhers"]
    assert gpt2_tok.convert_ids_to_tokens(male[:3]) == ["Ġhe", "Ġhim", "Ġhis"]
    assert not set(female) & set(male)
    for i in female + male:
        word = gpt2_tok.decode([i])
        assert word.startswith(" ") and word[1:] in FEMALE_NEXT_WORDS + MALE_NEXT_WORDS
