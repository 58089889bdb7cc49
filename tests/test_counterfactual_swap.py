import random
import subprocess
import sys

import pytest

from conftest import REPO
from distill.counterfactual.lexicon import load_lexicon, parse_pairs
from distill.counterfactual.swap import swap_gender
from distill.errors import ConfigError

AMBIGUOUS = {"his", "her", "him", "hers"}
NEUTRAL = ["the", "a", "doctor", "said", "that", "walked", "to", "market", "quickly", "and", "then", "left",
           "Hershey", "theme", "mankind", "shepherd", "Athens", "heroic", "manage", "café", "naïve", "3", "x"]
PUNCT = [" ", " ", " ", ", ", ". ", "! ", "? ", "; ", "'s ", " - ", "\n", "\t", " (", ") ", ' "', "…", "  "]


def _word_pairs():
    return [p for p in load_lexicon().pairs if not set(p) & AMBIGUOUS]


def _sentence(rng, pairs):
    out = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.5:
            word = rng.choice(rng.choice(pairs))
            word = rng.choice([word, word.capitalize(), word.upper()])
        else:
            word = rng.choice(NEUTRAL)
        out.append(word + rng.choice(PUNCT))
    return "".join(out)


def test_lexicon_has_enough_pairs_and_one_partner_per_word():
    lex = load_lexicon()
    assert len(lex.pairs) >= 80
    for male, female in lex.bijective_pairs():
        assert lex.partner[male] == female and lex.partner[female] == male
    words = [w for p in lex.bijective_pairs() for w in p]
    assert len(words) == len(set(words))
    for must in [("he", "she"), ("men", "women"), ("kings", "queens"), ("himself", "herself"), ("mr", "mrs")]:
        assert must in lex.pairs


def test_swap_is_an_involution_on_unambiguous_text():
    rng = random.Random(0)
    pairs = _word_pairs()
    changed = 0
    for _ in range(2000):
        text = _sentence(rng, pairs)
        cf = swap_gender(text)
        assert swap_gender(cf) == text, (text, cf)
        changed += cf != text
    assert changed > 500  # the generator really produces gendered text


def test_casing_is_kept():
    assert swap_gender("he He HE") == "she She SHE"
    assert swap_gender("she She SHE") == "he He HE"
    assert swap_gender("KINGS, Kings and kings") == "QUEENS, Queens and queens"
    rng = random.Random(1)
    for male, female in rng.sample(_word_pairs(), 30):
        for m, f in [(male, female), (male.capitalize(), female.capitalize()), (male.upper(), female.upper())]:
            assert swap_gender(f"x {m} y") == f"x {f} y"
            assert swap_gender(f"x {f} y") == f"x {m} y"


def test_text_without_gendered_words_is_unchanged_byte_for_byte():
    rng = random.Random(2)
    for _ in range(500):
        text = "".join(rng.choice(NEUTRAL) + rng.choice(PUNCT) for _ in range(rng.randint(0, 10)))
        assert swap_gender(text) == text
    for text in ["the theme then", "Hershey's", "shepherds", "mankind", "Sherlock", "ashes", "He_llo", "he2"]:
        assert swap_gender(text) == text


@pytest.mark.parametrize("text", ["", " ", "\n\n", "日本語のテキスト", "🙂🙂", "Ünïcödé", "\u212aing", "ſhe", "\x00"])
def test_unicode_and_empty_are_safe(text):
    out = swap_gender(text)
    assert isinstance(out, str)
    assert swap_gender(f"{text} he {text}") == f"{text} she {text}"


def test_whitespace_and_punctuation_are_kept_around_swapped_words():
    text = "«He»\t(HIM)…   his!\r\nMen's—women's  “Mr.” king’s"
    assert swap_gender(text) == "«She»\t(HER)…   hers!\r\nWomen's—men's  “Mrs.” queen’s"


@pytest.mark.parametrize("text,expected", [
    ("I saw her.", "I saw him."),
    ("I saw her car.", "I saw his car."),
    ("She lost her keys.", "He lost his keys."),
    ("We gave her the book.", "We gave him the book."),
    ("They asked her to stay.", "They asked him to stay."),
    ("Her own idea", "His own idea"),
    ("her 3 cats", "his 3 cats"),
    ("They admire her, and so do I.", "They admire him, and so do I."),
    ("HER CAR", "HIS CAR"),
])
def test_her_resolves_to_his_or_him_by_context(text, expected):
    assert swap_gender(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("The book is his.", "The book is hers."),
    ("his car", "her car"),
    ("His own idea was his and nobody else's", "Her own idea was hers and nobody else's"),
    ("It is his to keep", "It is hers to keep"),
    ("hers", "his"),
    ("We saw him yesterday.", "We saw her yesterday."),
])
def test_his_resolves_to_her_or_hers_by_context(text, expected):
    assert swap_gender(text) == expected


def test_pronoun_round_trip_on_well_formed_sentences():
    for text in ["He said his car was his.", "She thanked him for her gift.", "The king saw himself in his son."]:
        assert swap_gender(swap_gender(text)) == text


def test_names_only_when_asked_and_only_capitalised():
    text = "John met Mary; will you mark it?"
    assert swap_gender(text) == text
    assert swap_gender(text, names=True) == "Patricia met James; will you mark it?"
    assert swap_gender("Mark and Will", names=True).startswith("Lisa")


def test_user_pairs_file(tmp_path):
    good = tmp_path / "pairs.tsv"
    good.write_text("# my pairs\nwarlock\twitch\nfiremen\tfirewomen\n\n", encoding="utf-8")
    assert swap_gender("The warlock and the firemen.", pairs=str(good)) == "The witch and the firewomen."
    assert swap_gender("the witch", pairs=str(good)) == "the warlock"  # replaces the built-in wizard/witch
    assert swap_gender("he said", pairs=str(good)) == "she said"  # the built-in lexicon is still there
    assert swap_gender("the warlock", pairs=[("warlock", "witch")]) == "the witch"


@pytest.mark.parametrize("content,match", [
    ("king queen\n", "line 1: expected 'male<TAB>female'"),
    ("ok\tfine\nking\tqueen\textra\n", "line 2"),
    ("king\t\n", "line 1"),
    ("two words\tqueen\n", "not a single word"),
    ("lord\tlady\nlord\tdame\n", "pairs with both"),
])
def test_malformed_pairs_file_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        swap_gender("he", pairs=str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        swap_gender("he", pairs=str(tmp_path / "missing.tsv"))
    assert parse_pairs("# only a comment\n", "x") == []


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "distill", "counterfactual", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_prints_the_counterfactual_and_reads_stdin(tmp_path):
    res = _cli("He thanked his sister.")
    assert res.returncode == 0 and res.stdout == "She thanked her brother.\n"
    res = _cli("-", "--names", stdin="John and his sons\n  keep\tspacing ")
    assert res.returncode == 0 and res.stdout == "Patricia and her daughters\n  keep\tspacing "
    bad = tmp_path / "bad.tsv"
    bad.write_text("a b\n")
    res = _cli("--pairs_file", str(bad), "he")
    assert res.returncode == 2 and "line 1" in res.stderr and "Traceback" not in res.stderr
