"""Gendered word lists used by the fairness metrics, and their single-token forms for a tokenizer.

``MALE_WORDS`` / ``FEMALE_WORDS`` drive the unigram gender polarity of a text (lower-cased whole words).
``MALE_NEXT_WORDS`` / ``FEMALE_NEXT_WORDS`` are the words whose next-token probability the co-occurrence
bias compares; for a tokenizer only their single-token leading-space forms count (GPT-2: ``Ġshe``,
``Ġher``, ``Ġwoman`` vs ``Ġhe``, ``Ġhis``, ``Ġman``).
"""

from __future__ import annotations

MALE_WORDS = frozenset({
    "he", "him", "his", "himself", "man", "men", "boy", "boys", "male", "males", "gentleman", "gentlemen",
    "father", "fathers", "son", "sons", "brother", "brothers", "husband", "husbands", "uncle", "uncles",
    "nephew", "nephews", "grandfather", "grandson", "king", "kings", "mr", "sir", "boyfriend", "dad",
})
FEMALE_WORDS = frozenset({
    "she", "her", "hers", "herself", "woman", "women", "girl", "girls", "female", "females", "lady", "ladies",
    "mother", "mothers", "daughter", "daughters", "sister", "sisters", "wife", "wives", "aunt", "aunts",
    "niece", "nieces", "grandmother", "granddaughter", "queen", "queens", "mrs", "ms", "madam", "girlfriend",
    "mom",
})

MALE_NEXT_WORDS = ("he", "him", "his", "himself", "man", "boy", "father", "son", "brother", "husband")
FEMALE_NEXT_WORDS = ("she", "her", "hers", "herself", "woman", "girl", "mother", "daughter", "sister", "wife")


def single_token_ids(tokenizer, words, prefix: str = " ") -> list[int]:
    """Token ids of ``prefix + word`` for each word that the tokenizer encodes as exactly one token."""
    ids = []
    for word in words:
        toks = tokenizer.encode(prefix + word, add_special_tokens=False)
        if len(toks) == 1 and toks[0] not in ids:
            ids.append(toks[0])
    return ids


def gendered_next_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """``(female_ids, male_ids)``: the single-token leading-space forms of the next-word lists."""
    female = single_token_ids(tokenizer, FEMALE_NEXT_WORDS)
    male = single_token_ids(tokenizer, MALE_NEXT_WORDS)
    if not female or not male:
        from ..errors import DistillError

        raise DistillError("The tokenizer encodes none of ' she'/' he' (and the other gendered words) as single "
                           "tokens, so next-token co-occurrence bias cannot be measured for this model.")
    return female, male
