"""Text data shared by every layer: reading files, loading datasets, tokenising and packing, and padding into batches.

Sources: a `datasets` Hub name, local files (.txt, .json, .jsonl, .csv, .parquet), an in-memory list of
strings, or ``builtin:NAME`` corpora generated offline (``builtin:tiny``, ``builtin:demo``,
``builtin:demo-balanced``; :mod:`distill.builtin.corpus`). Texts are tokenised and either packed into fixed
blocks (documents joined by EOS) or kept one record a row (truncated, padded by the collator) — the latter
keeps each record in its own row, which differential privacy needs (the record is the privacy unit).

This is a ground module: the offline built-ins (the tiny teacher is trained on these blocks), the
distillation core (:mod:`distill.distillation.data` adds a run's canary and CDA) and the fairness prompts
(:func:`read_text`) use it, and it imports nothing above :mod:`distill.builtin.corpus`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_dataset

from .errors import ConfigError, DistillError
from .outputs import RECORD_ID

FILE_BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv",
                 ".parquet": "parquet"}


# ---------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------
def _builder_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_BUILDERS:
        raise ConfigError(
            f"Cannot read '{path}': unsupported extension '{ext}'. Use one of {', '.join(sorted(FILE_BUILDERS))}."
        )
    return FILE_BUILDERS[ext]


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen and (exc.__cause__ or exc.__context__) is not None:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return exc


def _not_utf8(path: str, exc: UnicodeDecodeError) -> ConfigError:
    return ConfigError(f"'{path}' is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at position "
                       f"{exc.start}): re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`.")


def read_text(path: str, what: str = "file") -> str:
    """The whole UTF-8 text of ``path``; a missing or non-UTF-8 file is one :class:`ConfigError`."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} '{path}' does not exist.")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None


def load_local_file(path: str, split: str = "train", what: str = "train_file") -> Dataset:
    """One local data file as a ``Dataset``; an empty, non-UTF-8 or malformed file is one :class:`ConfigError`."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} '{path}' does not exist.")
    builder = _builder_for(path)
    if os.path.getsize(path) == 0:
        raise ConfigError(f"{what} '{path}' is empty: give a file with at least one text.")
    try:
        ds = load_dataset(builder, data_files={split: path}, split=split)
    except Exception as exc:  # datasets wraps the reader's error (DatasetGenerationError, ArrowInvalid, ...)
        cause = _root_cause(exc)
        if isinstance(cause, UnicodeDecodeError):
            raise _not_utf8(path, cause) from None
        if isinstance(cause, (KeyboardInterrupt, MemoryError)):
            raise
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if "utf8" in detail.lower() or "utf-8" in detail.lower():
            raise ConfigError(f"'{path}' is not UTF-8 text ({detail.rstrip('.')}): re-save it as UTF-8, e.g. "
                              "`iconv -f latin1 -t utf-8 IN > OUT`.") from None
        raise ConfigError(f"{what} '{path}' could not be read as {builder} ({detail.rstrip('.')}): check that it is "
                          f"a valid {os.path.splitext(path)[1]} file (text in UTF-8).") from None
    if len(ds) == 0:
        raise ConfigError(f"{what} '{path}' holds no rows: give a file with at least one text.")
    try:  # the json and csv readers keep invalid UTF-8 bytes in string columns: full validation finds them
        ds.data.table.validate(full=True)
    except Exception as exc:  # pyarrow.ArrowInvalid
        if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
            raise ConfigError(f"'{path}' is not UTF-8 text: re-save it as UTF-8, e.g. "
                              "`iconv -f latin1 -t utf-8 IN > OUT`.") from None
        raise
    return ds


def load_raw_datasets(
    dataset_name: str | None = None,
    *,
    dataset_config_name: str | None = None,
    dataset_split: str = "train",
    train_file: str | None = None,
    validation_file: str | None = None,
    texts: list[str] | None = None,
    text_column: str = "text",
    validation_split_percentage: float = 5.0,
    seed: int = 42,
) -> DatasetDict:
    """A ``DatasetDict`` with a ``train`` split and (when possible) a ``validation`` split of raw text."""
    sources = [s for s in (dataset_name, train_file, texts) if s is not None]
    if len(sources) != 1:
        raise ConfigError("Give exactly one data source: dataset_name, train_file, or texts (in-memory list).")
    validation = None
    if texts is not None:
        train = Dataset.from_dict({text_column: list(texts)})
    elif dataset_name is not None and dataset_name.startswith("builtin:"):
        from .builtin.corpus import builtin_texts

        train = Dataset.from_dict({text_column: builtin_texts(dataset_name[len("builtin:"):])})
    elif dataset_name is not None:
        try:
            train = load_dataset(dataset_name, dataset_config_name, split=dataset_split)
            try:
                validation = load_dataset(dataset_name, dataset_config_name, split="validation")
            except (ValueError, KeyError):
                validation = None
        except (OSError, ConnectionError, FileNotFoundError) as exc:
            raise DistillError(
                f"Could not load dataset '{dataset_name}': {str(exc).splitlines()[0] if str(exc) else exc}. "
                "Offline? Use train_file with a local file, or dataset_name: builtin:tiny."
            ) from None
    else:
        train = load_local_file(train_file, "train", "train_file")
    if validation_file is not None:
        validation = load_local_file(validation_file, "validation", "validation_file")
    if text_column not in train.column_names:
        raise ConfigError(
            f"The training data has no column '{text_column}' (columns: {', '.join(train.column_names)}): "
            "set text_column to the column holding the text."
        )
    if train_file is not None and not any(isinstance(t, str) and t.strip() for batch in
                                          train.select_columns([text_column]).iter(batch_size=1000)
                                          for t in batch[text_column]):
        raise ConfigError(f"train_file '{train_file}' holds no text in column '{text_column}'.")
    if validation is None and validation_split_percentage > 0 and len(train) >= 2:
        n_val = max(1, int(len(train) * validation_split_percentage / 100))
        split = train.train_test_split(test_size=n_val, seed=seed, shuffle=True)
        train, validation = split["train"], split["test"]
    out = DatasetDict({"train": train})
    if validation is not None:
        out["validation"] = validation
    return out


# ---------------------------------------------------------------------------------------------------
# tokenisation and packing
# ---------------------------------------------------------------------------------------------------
def tokenize_and_pack(dataset: Dataset, tokenizer, *, block_size: int, text_column: str = "text",
                      packing: bool = True, num_proc: int | None = None) -> Dataset:
    """Tokenise ``text_column``; pack into ``block_size`` blocks, or keep one (truncated) record per row."""
    eos = tokenizer.eos_token_id
    # one record a row: keep the record index (differential privacy's unit) next to the tokens
    if not packing:
        dataset = add_record_ids(dataset)
    remove = [c for c in dataset.column_names if packing or c != RECORD_ID]

    def tok(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {"input_ids": tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]}

    tokenized = dataset.map(tok, batched=True, remove_columns=remove, num_proc=num_proc, desc="Tokenizing",
                            new_fingerprint=_tokenize_fingerprint(dataset, tokenizer, text_column, remove))
    if not packing:
        def trunc(batch):
            return {k: [ids[:block_size] for ids in v] for k, v in batch.items() if k.endswith("input_ids")}

        tokenized = tokenized.map(trunc, batched=True, desc="Truncating").filter(
            lambda ids: len(ids) >= 2, input_columns="input_ids")
        return tokenized

    def group(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        ids: list[int] = []
        for seq in batch["input_ids"]:
            ids.extend(seq)
            if eos is not None:
                ids.append(eos)
        total = (len(ids) // block_size) * block_size
        return {"input_ids": [ids[i : i + block_size] for i in range(0, total, block_size)]}

    packed = tokenized.map(group, batched=True, batch_size=1000, num_proc=num_proc, desc=f"Packing into {block_size}")
    if len(packed) == 0:
        raise ConfigError(
            f"The data has fewer tokens than one block of block_size={block_size}: lower block_size or add text."
        )
    return packed


def _tokenize_fingerprint(dataset: Dataset, tokenizer, text_column: str, remove: list[str]) -> str | None:
    """The tokenising map's `datasets` fingerprint (its cache key), computed from what decides its output: the
    input's fingerprint, the column, and the tokenizer's full definition (``tokenizer.json``: vocabulary, merges,
    normaliser, pre-tokeniser, added tokens) with its class and init options. `datasets` would otherwise
    dill-pickle the closure and the tokenizer inside it several times per map, on every run (GPT-2's 50257-token
    BPE: the start-up figure in docs/performance.md). ``None`` (let `datasets` hash) for a tokenizer without a
    `tokenizers` backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    from datasets.fingerprint import Hasher

    options = sorted((k, repr(v)) for k, v in getattr(tokenizer, "init_kwargs", {}).items()
                     if isinstance(v, (str, int, float, bool, type(None))))
    return Hasher.hash(["tokenize-v1", dataset._fingerprint, text_column, remove, type(tokenizer).__qualname__,
                        options, backend.to_str()])


def add_record_ids(dataset: Dataset) -> Dataset:
    """Add the int column ``record_id`` (the row's index): rows derived from a record (its counterfactual)
    keep it, so that a record and everything derived from it can be treated as one privacy unit."""
    if RECORD_ID in dataset.column_names:
        return dataset
    return dataset.add_column(RECORD_ID, list(range(len(dataset))))


# ---------------------------------------------------------------------------------------------------
# collation
# ---------------------------------------------------------------------------------------------------
class DistillationCollator:
    """Pads a list of examples into a batch for the student and the teacher.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding) and ``position_ids`` of shape
    ``[B, T]`` — one contiguous row per sample (per-sample gradient engines need it, a broadcast view
    breaks them). Any other ``*input_ids`` field is padded the same way.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def _pad(self, seqs: list[list[int]], length: int, value: int) -> torch.Tensor:
        out = torch.full((len(seqs), length), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        return out

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        id_keys = [k for k in examples[0] if k.endswith("input_ids")]
        length = max(len(e[k]) for e in examples for k in id_keys)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = ((length + m - 1) // m) * m
        lengths = torch.tensor([len(e["input_ids"]) for e in examples])
        attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        batch = {k: self._pad([list(e[k]) for e in examples], length, self.pad_token_id) for k in id_keys}
        labels = batch["input_ids"].clone()
        labels[attention_mask == 0] = -100
        batch["attention_mask"] = attention_mask
        batch["labels"] = labels
        # right padding: positions count 0..len-1 on real tokens; clamp keeps padding positions valid
        batch["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp_min(0).contiguous()
        for key in examples[0]:
            if key not in batch and not key.endswith("input_ids"):
                values = [e[key] for e in examples]
                if isinstance(values[0], (int, float, bool)):
                    batch[key] = torch.tensor(values)
        return batch
