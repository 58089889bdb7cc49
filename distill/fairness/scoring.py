"""Batched likelihood scoring and contextual embeddings of a causal LM, for the intrinsic and downstream metrics.

* :func:`continuation_logprobs` — ``log p(continuation | context) = Σ_t log p(c_t | context, c_<t)`` of many
  (context, continuation) pairs; :func:`sentence_logprobs` — ``log p(sentence)`` with a BOS/EOS token as the
  context, so the first word is scored too.
* :func:`span_embeddings` — the hidden state of a chosen layer, averaged over the tokens of a word, for many
  (sentence, word position) pairs.

Context and continuation are tokenised separately and concatenated, so the boundary between them (and the
word's token positions) is exact; with GPT-2's BPE a leading-space word tokenises the same either way.
Sequences are sorted by length, right-padded and run ``batch_size`` at a time: a causal model's outputs at
real tokens do not depend on the padding after them. ``transformers`` gives the forward pass; these helpers only
gather the scores, which no library does for a causal LM's per-span log-likelihoods and hidden states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import DistillError
from .generation import eval_mode, max_positions, model_device


def _ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def start_token_id(tokenizer) -> int:
    """The token that starts a scored sentence: BOS, else EOS (GPT-2's ``<|endoftext|>``)."""
    tok = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tok is None:
        raise DistillError("The tokenizer has neither a BOS nor an EOS token, so the first word of a sentence "
                           "cannot be scored: set tokenizer.bos_token.")
    return tok


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    if batch_size < 1:
        raise DistillError(f"batch_size must be >= 1, got {batch_size}.")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _pad(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


def _check_length(model, longest: int) -> None:
    limit = max_positions(model)
    if limit is not None and longest > limit:
        raise DistillError(f"A scored sequence has {longest} tokens, more than the model's context length "
                           f"({limit}): use shorter templates.")


@torch.no_grad()
def score_token_ids(model, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                    batch_size: int = 32, progress: bool = False, desc: str = "Scoring") -> torch.Tensor:
    """``Σ log p(continuation tokens | prefix)`` of each (prefix ids, continuation ids) pair, float64 ``[N]``."""
    if len(prefixes) != len(continuations):
        raise ValueError("prefixes and continuations must have the same length")
    if any(not p for p in prefixes) or any(not c for c in continuations):
        raise DistillError("Every scored prefix and continuation needs at least one token.")
    rows = [list(p) + list(c) for p, c in zip(prefixes, continuations)]
    if not rows:
        return torch.empty(0, dtype=torch.float64)
    _check_length(model, max(len(r) for r in rows))
    device = model_device(model)
    out = torch.empty(len(rows), dtype=torch.float64)
    with eval_mode(model):
        for idx in tqdm(_length_batches([len(r) for r in rows], batch_size), desc=desc, disable=not progress):
            ids, mask = _pad([rows[i] for i in idx], device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = ids[:, 1:]
            token_lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            pos = torch.arange(target.shape[1], device=device)
            starts = torch.tensor([len(prefixes[i]) - 1 for i in idx], device=device)
            ends = torch.tensor([len(rows[i]) - 1 for i in idx], device=device)
            keep = (pos >= starts[:, None]) & (pos < ends[:, None])
            out[idx] = (token_lp * keep).sum(-1).double().cpu()
    return out


def continuation_logprobs(model, tokenizer, contexts: Sequence[str], continuations: Sequence[str],
                          batch_size: int = 32, progress: bool = False, desc: str = "Scoring") -> torch.Tensor:
    """``log p(continuation | context)`` of each pair (an empty context means the start token)."""
    start = start_token_id(tokenizer)
    prefixes = [ids or [start] for ids in _ids(tokenizer, contexts)]
    return score_token_ids(model, prefixes, _ids(tokenizer, continuations), batch_size, progress, desc)


def sentence_logprobs(model, tokenizer, sentences: Sequence[str], batch_size: int = 32, progress: bool = False,
                      desc: str = "Scoring sentences") -> torch.Tensor:
    """``log p(sentence)``: every token scored, the first one after the start token."""
    start = start_token_id(tokenizer)
    return score_token_ids(model, [[start]] * len(sentences), _ids(tokenizer, sentences), batch_size, progress,
                           desc)


def heldout_perplexity(model, tokenizer, texts: list[str], batch_size: int = 32) -> float:
    """Token-weighted perplexity of ``model`` on ``texts`` (one text a row, right padding)."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            keep = mask[:, 1:].float()
            total_nll += float((nll * keep).sum())
            total_tokens += int(keep.sum())
    return math.exp(total_nll / max(total_tokens, 1))


def resolve_layer(model, layer: int) -> int:
    """Index into ``hidden_states`` (0 = embeddings, -1 = last block's output); checks the range."""
    n_layer = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if n_layer is not None and not -(n_layer + 1) <= layer <= n_layer:
        raise DistillError(f"layer {layer} is out of range: the model has hidden states 0..{n_layer} "
                           f"(0 = embeddings, -1 = last layer).")
    return layer


def body_model(model):
    """The model without its LM head when ``transformers`` exposes it (``base_model``): hidden states without
    the vocabulary-sized logits. Any other module is used whole."""
    body = getattr(model, "base_model", None)
    return body if isinstance(body, torch.nn.Module) and body is not model else model


@torch.no_grad()
def span_embeddings(model, tokenizer, pieces: Sequence[tuple[str, str, str]], layer: int = -1,
                    batch_size: int = 64, progress: bool = False, desc: str = "Embedding") -> torch.Tensor:
    """Contextual embedding of the middle piece of each ``(left, word, right)`` sentence, float32 ``[N, d]``.

    The embedding is ``hidden_states[layer]`` averaged over the word's tokens; the sentence starts with the
    start token, so a word at the start of a sentence has a context too.
    """
    layer = resolve_layer(model, layer)
    start = start_token_id(tokenizer)
    lefts = _ids(tokenizer, [p[0] for p in pieces])
    words = _ids(tokenizer, [p[1] for p in pieces])
    rights = _ids(tokenizer, [p[2] for p in pieces])
    if any(not w for w in words):
        raise DistillError("An empty word cannot be embedded.")
    rows = [[start] + a + w + b for a, w, b in zip(lefts, words, rights)]
    if not rows:
        return torch.empty(0)
    _check_length(model, max(len(r) for r in rows))
    device = model_device(model)
    body = body_model(model)
    out: torch.Tensor | None = None
    with eval_mode(model):
        for idx in tqdm(_length_batches([len(r) for r in rows], batch_size), desc=desc, disable=not progress):
            ids, mask = _pad([rows[i] for i in idx], device)
            hidden = body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            hidden = hidden.float()
            pos = torch.arange(ids.shape[1], device=device)
            starts = torch.tensor([1 + len(lefts[i]) for i in idx], device=device)
            ends = starts + torch.tensor([len(words[i]) for i in idx], device=device)
            sel = ((pos >= starts[:, None]) & (pos < ends[:, None])).float()
            emb = (hidden * sel[..., None]).sum(1) / sel.sum(1, keepdim=True)
            if out is None:
                out = torch.empty(len(rows), emb.shape[-1])
            out[idx] = emb.cpu()
    return out


def resolve_model_and_tokenizer(model, tokenizer=None, device=None):
    """``(model, tokenizer)`` from loaded objects or names/paths (safetensors only, no remote code), for the
    ``evaluate`` measurement modules."""
    from ..model_loading import load_causal_lm, load_tokenizer

    if model is None:
        raise DistillError("Pass model= (a causal LM, a local directory or a Hub name) to compute this measurement.")
    if isinstance(model, str):
        name = model
        model = load_causal_lm(name)
        if device is not None:
            model = model.to(device)
        tokenizer = tokenizer if tokenizer is not None else name
    if tokenizer is None:
        raise DistillError("Pass tokenizer= with a loaded model (or pass the model as a path).")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    return model, tokenizer
