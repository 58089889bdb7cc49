"""Batched vs one-prompt-at-a-time generation for fairness evaluation, on CPU.

    PYTHONPATH=. python scripts/bench_eval.py [--prompts 64] [--max-new-tokens 20] [--batch-size 64]

Uses a randomly initialised 4x64 GPT-2 with GPT-2's real 50257-token vocabulary (the cost that matters on
CPU is the 50257-wide output layer) and the first 64 builtin profession prompts; ``min_new_tokens`` makes
every prompt generate exactly ``max_new_tokens`` tokens in both modes. Prints both times and the speedup.
"""

from __future__ import annotations

import argparse

import torch

from bench_common import time_generation, tiny_model_and_prompts  # scripts/, next to this file
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
