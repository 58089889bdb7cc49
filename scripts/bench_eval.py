"""Batched vs one-prompt-at-a-time generation for fairness evaluation, on CPU.

    PYTHONPATH=. python scripts/bench_eval.py [--prompts 64] [--max-new-tokens 20] [--batch-size 64]

Uses a randomly initialised 4x64 GPT-2 with GPT-2's real 50257-token vocabulary (the cost that matters on
CPU is the 50257-wide output layer) and the first 64 builtin profession prompts; ``min_new_tokens`` makes
every prompt generate exactly ``max_new_tokens`` tokens in both modes. Prints both times and the speedup.
"""

from __future__ import annotations

import argparse
import time

import torch

from distill.runtime import tune_cpu_allocator


def tiny_model_and_prompts(num_prompts: int):
    """The randomly initialised 4x64 GPT-2 (real vocabulary), its tokenizer and ``num_prompts`` builtin prompts."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.fairness.prompts import load_prompts
    from distill.builtin.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=4, n_head=4,
                                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).eval()
    prompts = [p.text for p in load_prompts("builtin").prompts[:num_prompts]]
    return model, tok, prompts


def time_generation(model, tok, prompts, *, max_new_tokens: int, batch_size: int, repeats: int) -> dict:
    """Best-of-``repeats`` wall time of batched and of one-prompt-at-a-time greedy generation."""
    from distill.fairness.generation import generate_continuations

    # min_new_tokens: no early EOS, so both modes generate exactly max_new_tokens tokens a prompt
    kw = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False, progress=False)
    generate_continuations(model, tok, prompts[:2], batch_size=2, **kw)  # warm-up

    def best(fn):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_batched, batched = best(lambda: generate_continuations(model, tok, prompts, batch_size=batch_size, **kw))
    t_single, single = best(lambda: [generate_continuations(model, tok, [x], batch_size=1, **kw)[0] for x in prompts])
    return {"batched_s": t_batched, "single_s": t_single, "speedup": t_single / t_batched,
            "identical_outputs": batched == single}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=2, help="best of N runs per mode")
    args = p.parse_args()
    applied = tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, prompts = tiny_model_and_prompts(args.prompts)
    r = time_generation(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        repeats=args.repeats)
    print(f"allocator tuned: {applied}; torch threads: {torch.get_num_threads()}")
    print(f"{len(prompts)} prompts x {args.max_new_tokens} new tokens, greedy")
    print(f"one prompt at a time: {r['single_s']:.2f} s")
    print(f"batched (batch {args.batch_size}): {r['batched_s']:.2f} s")
    print(f"speedup: {r['speedup']:.1f}x   identical outputs: {r['identical_outputs']}")


if __name__ == "__main__":
    main()
