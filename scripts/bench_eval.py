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
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.fairness.generation import generate_continuations
    from distill.fairness.prompts import load_prompts
    from distill.models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=4, n_head=4,
                                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).eval()
    prompts = [p.text for p in load_prompts("builtin").prompts[: args.prompts]]
    # min_new_tokens: no early EOS, so both modes generate exactly max_new_tokens tokens a prompt
    kw = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False,
              progress=False)
    generate_continuations(model, tok, prompts[:2], batch_size=2, **kw)  # warm-up

    def best(fn):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_batched, batched = best(lambda: generate_continuations(model, tok, prompts, batch_size=args.batch_size, **kw))
    t_single, single = best(lambda: [generate_continuations(model, tok, [x], batch_size=1, **kw)[0] for x in prompts])
    same = batched == single
    print(f"allocator tuned: {applied}; torch threads: {torch.get_num_threads()}")
    print(f"{len(prompts)} prompts x {args.max_new_tokens} new tokens, greedy")
    print(f"one prompt at a time: {t_single:.2f} s")
    print(f"batched (batch {args.batch_size}): {t_batched:.2f} s")
    print(f"speedup: {t_single / t_batched:.1f}x   identical outputs: {same}")


if __name__ == "__main__":
    main()
