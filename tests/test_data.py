import json

import pytest
import torch

from distill.text_data import load_raw_datasets
from distill.text_data import tokenize_and_pack
from distill.text_data import DistillationCollator
from distill.errors import ConfigError


@pytest.mark.parametrize("ext", ["txt", "jsonl", "json", "csv", "parquet"])
def test_local_files_of_every_format(tmp_path, ext):
    texts = [f"line number {i} about a nurse" for i in range(20)]
    path = tmp_path / f"data.{ext}"
    if ext == "txt":
        path.write_text("\n".join(texts))
    elif ext in ("jsonl", "json"):
        path.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    else:
        import pandas as pd

        df = pd.DataFrame({"text": texts})
        df.to_csv(path, index=False) if ext == "csv" else df.to_parquet(path)
    ds = load_raw_datasets(train_file=str(path), validation_split_percentage=10)
    assert len(ds["train"]) + len(ds["validation"]) == 20
    assert set(ds["train"]["text"]) | set(ds["validation"]["text"]) == set(texts)


def test_sources_and_errors(tmp_path):
    assert len(load_raw_datasets(texts=["a", "b", "c"], validation_split_percentage=0)["train"]) == 3
    assert len(load_raw_datasets("builtin:tiny")["train"]) > 1000
    with pytest.raises(ConfigError, match="exactly one data source"):
        load_raw_datasets("builtin:tiny", texts=["a"])
    with pytest.raises(ConfigError, match="unsupported extension"):
        (tmp_path / "x.xml").write_text("<a/>")
        load_raw_datasets(train_file=str(tmp_path / "x.xml"))
    (tmp_path / "d.jsonl").write_text('{"content": "a"}\n{"content": "b"}\n')
    with pytest.raises(ConfigError, match="no column 'text'"):
        load_raw_datasets(train_file=str(tmp_path / "d.jsonl"))


def test_packing_is_lossless_and_fixed_size(gpt2_tok):
    texts = [f"The nurse said that she would be late {i}." for i in range(50)]
    ds = load_raw_datasets(texts=texts, validation_split_percentage=0)["train"]
    packed = tokenize_and_pack(ds, gpt2_tok, block_size=16)
    assert all(len(r) == 16 for r in packed["input_ids"])
    stream = []
    for t in texts:
        stream += gpt2_tok(t)["input_ids"] + [gpt2_tok.eos_token_id]
    flat = [i for r in packed["input_ids"] for i in r]
    assert flat == stream[: len(flat)] and len(stream) - len(flat) < 16
    with pytest.raises(ConfigError, match="fewer tokens than one block"):
        tokenize_and_pack(ds.select([0]), gpt2_tok, block_size=512)


def test_collator_gives_per_sample_contiguous_position_ids():
    coll = DistillationCollator(pad_token_id=0)
    batch = coll([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    assert batch["position_ids"].shape == (2, 3) and batch["position_ids"].is_contiguous()
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, 9, -100]]
    assert batch["input_ids"].dtype == torch.long


class _Unpicklable:
    """A tokenizer that counts attempts to pickle it: `datasets` must not hash it by pickling (seconds per map).
    (`datasets` swallows a failed hash and uses a random fingerprint, so raising alone would go unnoticed.)"""

    pickled = 0

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *a, **k):
        return self._tok(*a, **k)

    def __reduce_ex__(self, protocol):
        _Unpicklable.pickled += 1
        raise TypeError("the tokenizer was pickled")


def test_tokenizing_fingerprint_is_cheap_and_keys_the_cache_by_tokenizer(tmp_path, gpt2_tok):
    from distill.builtin.vocab import restricted_gpt2_tokenizer
    from distill.text_data import _tokenize_fingerprint

    _Unpicklable.pickled = 0
    texts = [f"The nurse said that she would be late {i}." for i in range(40)]
    (tmp_path / "d.txt").write_text("\n".join(texts))
    ds = load_raw_datasets(train_file=str(tmp_path / "d.txt"), validation_split_percentage=0)["train"]
    assert ds.cache_files  # read from disk: map results are cached by fingerprint
    small = restricted_gpt2_tokenizer(texts)
    for tok in (gpt2_tok, small, gpt2_tok):  # a cached result is reused only for the tokenizer that made it
        rows = tokenize_and_pack(ds, _Unpicklable(tok), block_size=8, packing=False)
        assert rows["input_ids"] == [tok(t, add_special_tokens=False)["input_ids"][:8] for t in texts]
    assert _Unpicklable.pickled == 0
    fp = _tokenize_fingerprint(ds, gpt2_tok, "text", ["text"])
    assert fp == _tokenize_fingerprint(ds, gpt2_tok, "text", ["text"])
    assert fp != _tokenize_fingerprint(ds, small, "text", ["text"])
    assert fp != _tokenize_fingerprint(ds, gpt2_tok, "body", ["text"])
    assert fp != _tokenize_fingerprint(ds.select(range(3)), gpt2_tok, "text", ["text"])
    assert _tokenize_fingerprint(ds, object(), "text", ["text"]) is None  # no `tokenizers` backend: datasets hashes
