import pytest
from datasets import Dataset

from distill.counterfactual.cda import apply_cda
from distill.counterfactual.lexicon import load_lexicon
from distill.counterfactual.swap import GenderSwapper, swap_gender
from distill.distillation.data import prepare_datasets
from distill.builtin.corpus import CorpusSpec, generate_corpus

TEXTS = generate_corpus(CorpusSpec(num_documents=300, seed=3))


@pytest.fixture(scope="module")
def swapper():
    return GenderSwapper(load_lexicon())


def _ds():
    return Dataset.from_dict({"text": TEXTS, "record_id": list(range(len(TEXTS)))})


def test_one_sided_is_deterministic_and_leaves_neutral_rows_alone(swapper):
    a = apply_cda(_ds(), swapper, mode="one_sided", prob=0.5, seed=7)["text"]
    b = apply_cda(_ds(), swapper, mode="one_sided", prob=0.5, seed=7)["text"]
    c = apply_cda(_ds(), swapper, mode="one_sided", prob=0.5, seed=8)["text"]
    assert a == b and a != c
    assert len(a) == len(TEXTS)
    gendered = [t != swap_gender(t) for t in TEXTS]
    assert 50 < sum(gendered) < len(TEXTS)  # the corpus has both kinds
    swapped = 0
    for orig, new, g in zip(TEXTS, a, gendered):
        if not g:
            assert new == orig
        else:
            assert new in (orig, swap_gender(orig))
            swapped += new != orig
    assert 0.35 < swapped / sum(gendered) < 0.65
    assert apply_cda(_ds(), swapper, mode="one_sided", prob=0.0, seed=7)["text"] == TEXTS
    assert apply_cda(_ds(), swapper, mode="one_sided", prob=1.0, seed=7)["text"] == [swap_gender(t) for t in TEXTS]


def test_one_sided_does_not_depend_on_batching(swapper):
    ds = _ds()
    a = apply_cda(ds, swapper, mode="one_sided", prob=0.5, seed=1)["text"]
    b = ds.map(lambda x: x, batch_size=7, batched=True)  # new fingerprint, different batch layout
    assert apply_cda(b, swapper, mode="one_sided", prob=0.5, seed=1)["text"] == a


def test_two_sided_adds_counterfactuals_that_keep_the_record_id(swapper):
    out = apply_cda(_ds(), swapper, mode="two_sided", seed=0)
    gendered = sum(t != swap_gender(t) for t in TEXTS)
    assert len(out) == len(TEXTS) + gendered
    by_record = {}
    for row in out:
        by_record.setdefault(row["record_id"], []).append(row["text"])
    assert sorted(by_record) == list(range(len(TEXTS)))
    for rid, texts in by_record.items():
        original = TEXTS[rid]
        assert texts[0] == original
        assert texts[1:] == ([swap_gender(original)] if swap_gender(original) != original else [])


def test_none_returns_the_same_dataset(swapper):
    ds = _ds()
    assert apply_cda(ds, swapper, mode="none") is ds


def test_prepare_datasets_records_and_train_only(tmp_path, gpt2_tok):
    from distill.distillation.config import DistillationConfig

    def tiny_args(**kw):
        return DistillationConfig(output_dir=str(tmp_path), block_size=32, report_to="none", use_cpu=True,
                                  seed=0, **kw)

    tok = gpt2_tok
    texts = TEXTS[:120]
    base = prepare_datasets(tiny_args(packing=False, cda="none", validation_split_percentage=20), tok, texts=texts)
    aug = prepare_datasets(tiny_args(packing=False, cda="two_sided", validation_split_percentage=20), tok,
                           texts=texts)
    train0, eval0 = base
    train1, eval1 = aug
    assert "record_id" in train0.column_names and "record_id" in train1.column_names
    assert train0["record_id"] == list(range(len(train0)))
    assert eval1["input_ids"] == eval0["input_ids"]  # the eval split is never augmented
    assert len(train1) > len(train0)
    ids = train1["record_id"]
    assert sorted(set(ids)) == train0["record_id"]
    for rid in set(ids):  # a record's counterfactual decodes to the swapped text of that record
        rows = [r for r, i in zip(train1["input_ids"], ids) if i == rid]
        assert rows[0] == train0["input_ids"][rid]
        if len(rows) == 2:
            assert tok.decode(rows[1]) == swap_gender(tok.decode(rows[0]))
    # packing: the counterfactual texts are simply added to the token stream
    packed, _ = prepare_datasets(tiny_args(packing=True, cda="two_sided", validation_split_percentage=0), tok,
                                 texts=texts)
    n_tokens = sum(len(tok(t)["input_ids"]) + 1 for t in texts + [swap_gender(t) for t in texts if t != swap_gender(t)])
    assert "record_id" not in packed.column_names and len(packed) == n_tokens // 32


def test_crr_recipes_extend_the_plain_ones():
    import os

    from conftest import REPO
    from distill.distillation.config import read_yaml

    for plain, crr in [("gpt2-to-distilgpt2.yaml", "gpt2-to-distilgpt2-crr.yaml"), ("tiny.yaml", "tiny-crr.yaml")]:
        a = read_yaml(os.path.join(REPO, "configs", plain))
        b = read_yaml(os.path.join(REPO, "configs", crr))
        assert b["perturbation"] == "mean" and b["cda"] in ("one_sided", "two_sided")
        differing = {k for k in a if a[k] != b.get(k)}
        assert differing <= {"output_dir", "dataset_name"}, differing
