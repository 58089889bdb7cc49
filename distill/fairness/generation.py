"""Batched inference for fairness evaluation: left-padded generation and next-token log-probabilities.

Prompts are sorted by length and run in batches with left padding, so every prompt's last token sits at
the same position and generation continues right after it; explicit ``position_ids`` (from the attention
mask) make a padded batch give the same result as one prompt at a time. The global RNG state is saved and
restored around sampling, so evaluating during training does not change the training run.

With ``prompt_ids``, sampling is *per prompt*: continuation ``j`` of prompt ``i`` draws every token from its
own generator seeded by ``(seed, i, j)`` (Gumbel-max: ``argmax(warped logits + Gumbel noise)`` is a draw from
the softmax of the warped logits), so the draws do not depend on which prompts share a batch or a process.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import DistillError


def prompt_seed(seed: int, prompt_id: int, sample: int) -> int:
    """The seed of continuation ``sample`` of prompt ``prompt_id``."""
    return ((seed * 1_000_003 + prompt_id) * 1_009 + sample) % (2 ** 63)


class PerRowGumbelSampling:
    """A logits processor that turns greedy decoding into sampling with one ``torch.Generator`` per row."""

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.device = device
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=self.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        return scores.float() + gumbel.to(scores.device)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore its previous train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def left_padding(tokenizer) -> Iterator[None]:
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = old_side
        tokenizer.pad_token = old_pad


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def _batches(texts: Sequence[str], tokenizer, batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` grouped in batches of similar token length (less padding)."""
    if batch_size < 1:
        raise DistillError(f"batch_size must be >= 1, got {batch_size}.")
    lengths = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _encode(tokenizer, texts: list[str], device, max_length: int | None) -> dict[str, torch.Tensor]:
    kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
    old_trunc = tokenizer.truncation_side
    tokenizer.truncation_side = "left"  # keep the end of an over-long prompt: it is what gets continued
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, **kwargs)
    finally:
        tokenizer.truncation_side = old_trunc
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _accepts_position_ids(model) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


@torch.no_grad()
def next_token_scores(model, tokenizer, texts: Sequence[str], reduce: Callable[[torch.Tensor], torch.Tensor],
                      batch_size: int = 32, progress: bool = False, desc: str = "Next-token scores"
                      ) -> torch.Tensor:
    """``reduce(log p(next token | text))`` for each text, from one left-padded forward pass a batch.

    ``reduce`` maps log-probabilities ``[B, V]`` to scores ``[B, ...]`` (so the ``[N, V]`` matrix is never
    held at once). Returns the scores in the order of ``texts``.
    """
    if not texts:
        return torch.empty(0)
    device = model_device(model)
    limit = max_positions(model)
    out: list[torch.Tensor | None] = [None] * len(texts)
    with eval_mode(model), left_padding(tokenizer):
        for idx in tqdm(_batches(texts, tokenizer, batch_size), desc=desc, disable=not progress):
            enc = _encode(tokenizer, [texts[i] for i in idx], device, limit)
            kwargs = dict(enc)
            if _accepts_position_ids(model):
                kwargs["position_ids"] = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
            logits = model(**kwargs).logits[:, -1, :]
            scores = reduce(torch.log_softmax(logits.float(), dim=-1)).cpu()
            for row, i in enumerate(idx):
                out[i] = scores[row]
    return torch.stack(out)


@torch.no_grad()
def generate_continuations(model, tokenizer, texts: Sequence[str], *, max_new_tokens: int = 20,
                           num_return_sequences: int = 1, do_sample: bool = True, temperature: float = 1.0,
                           top_k: int = 0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
                           progress: bool = True, desc: str = "Generating", prompt_ids: Sequence[int] | None = None,
                           **generation_kwargs) -> list[list[str]]:
    """``num_return_sequences`` continuations (prompt excluded) of each text, generated in left-padded batches.

    ``do_sample=False`` is greedy decoding (then ``num_return_sequences`` must be 1). Other keyword
    arguments go to :class:`transformers.GenerationConfig` (e.g. ``repetition_penalty``, ``min_new_tokens``).
    ``prompt_ids`` (one id a text): sample each prompt from its own seeds (see the module docstring).
    """
    from transformers import (GenerationConfig, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    if max_new_tokens < 1:
        raise DistillError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if num_return_sequences < 1:
        raise DistillError(f"num_samples must be >= 1, got {num_return_sequences}.")
    if not do_sample and num_return_sequences > 1:
        raise DistillError("Greedy decoding gives one continuation per prompt: use sampling for num_samples > 1.")
    limit = max_positions(model)
    if limit is not None and max_new_tokens >= limit:
        raise DistillError(f"max_new_tokens ({max_new_tokens}) must be smaller than the model's context "
                           f"length ({limit}).")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_prompt = do_sample and prompt_ids is not None
    if per_prompt and len(prompt_ids) != len(texts):
        raise DistillError(f"prompt_ids has {len(prompt_ids)} ids for {len(texts)} prompts.")
    if per_prompt:  # greedy over Gumbel-perturbed warped logits, rows repeated per sample
        warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        warpers += [TopKLogitsWarper(top_k)] if top_k > 0 else []
        warpers += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
        gen_config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                      eos_token_id=tokenizer.eos_token_id, **generation_kwargs)
    else:
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_return_sequences,
            pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
            **({"temperature": temperature, "top_k": top_k, "top_p": top_p} if do_sample else {}),
            **generation_kwargs,
        )
    device = model_device(model)
    results: list[list[str] | None] = [None] * len(texts)
    devices = [device.index] if device.type == "cuda" and device.index is not None else []
    with eval_mode(model), left_padding(tokenizer), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for idx in tqdm(_batches(texts, tokenizer, batch_size), desc=desc, disable=not progress):
            enc = _encode(tokenizer, [texts[i] for i in idx], device,
                          limit - max_new_tokens if limit else None)
            if per_prompt:
                enc = {k: v.repeat_interleave(num_return_sequences, dim=0) for k, v in enc.items()}
                seeds = [prompt_seed(seed, prompt_ids[i], j) for i in idx for j in range(num_return_sequences)]
                processors = LogitsProcessorList([*warpers, PerRowGumbelSampling(seeds, device)])
                out = model.generate(**enc, generation_config=gen_config, logits_processor=processors)
            else:
                out = model.generate(**enc, generation_config=gen_config)
            new = out[:, enc["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            for row, i in enumerate(idx):
                k = row * num_return_sequences
                results[i] = decoded[k:k + num_return_sequences]
    return results
