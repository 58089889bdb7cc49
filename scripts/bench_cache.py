"""Training from a teacher cache vs training with the teacher online: step-time ratios and cache size, one run.

Contenders, on the same teacher, student weights and batch (rows of the demo corpus in GPT-2's BPE, every row
gendered), all with the same loss: the shipped recipe's T = 2, alpha_kd 5, alpha_lm 2, and alpha_cos 0 (a cache
holds no hidden states):

* ``kd``           online KD step (teacher forward + dense forward KL),
* ``cached_kd``    KD step from a top-k cache of the same rows (no teacher forward; sparse top-k + tail KL),
* ``cached_crr``   CRR step (``perturbation: mean``) from a top-k cache of the perturbed targets.

Reported: ``cached_kd_vs_kd`` and ``cached_crr_vs_cached_kd`` (medians over rounds of per-round ratios of median
step times, contenders round-robin, order reversed every other round: ``bench.py``'s timing) and
``cache_bytes_per_token`` (shard bytes on disk / tokens). ``--real-shapes`` does the same for GPT-2 (12 x 768)
-> a 6-layer student with random weights (``real_shapes.cached_kd_vs_kd``); it is on by default on a GPU.

    python scripts/bench_cache.py [--json] [--steps 3 --repeat 8 --batch 8 --seq 64 --top-k 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch  # noqa: E402

from bench_common import (  # noqa: E402  (scripts/, next to this file)
    CACHE_RECIPE, bench_cache, bench_cache_real_shapes, environment, make_teacher)

TARGETS = {"cached_kd_vs_kd": (0.75, True), "cached_crr_vs_cached_kd": (1.05, True)}


def verdicts(result: dict) -> dict:
    out = {}
    for key, (target, lower) in TARGETS.items():
        value = result.get(key)
        out[key] = {"value": value, "target": f"<= {target}", "met": None if value is None else value <= target}
    rs = result.get("real_shapes_cache")
    if rs:
        out["real_shapes.cached_kd_vs_kd"] = {"value": rs["cached_kd_vs_kd"], "target": "<= 0.7",
                                              "met": rs["cached_kd_vs_kd"] <= 0.7}
    out["cache_bytes_per_token"] = {"value": result["cache_bytes_per_token"], "target": "<= 400",
                                    "met": result["cache_bytes_per_token"] <= 400}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--real-shapes", action="store_true", help="also GPT-2 shapes on CPU (default: GPU only)")
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-seq", type=int, default=512)
    a = ap.parse_args(argv)
    from distill.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    if a.threads:
        torch.set_num_threads(a.threads)
    result: dict = {}
    with tempfile.TemporaryDirectory() as work:
        teacher = make_teacher(os.path.join(work, "teacher"))
        result.update(bench_cache(teacher, work, batch=a.batch, seq=a.seq, top_k=a.top_k, steps=a.steps,
                                  repeat=a.repeat, warmup=a.warmup))
        if torch.cuda.is_available() or a.real_shapes:
            result["real_shapes_cache"] = bench_cache_real_shapes(work, batch=a.gpu_batch, seq=a.gpu_seq,
                                                                  top_k=a.top_k, steps=a.steps,
                                                                  repeat=max(2, a.repeat // 2), warmup=1)
    result["targets"] = verdicts(result)
    result["env"] = environment()
    result["settings"] = {"batch": a.batch, "seq": a.seq, "steps": a.steps, "repeat": a.repeat, "warmup": a.warmup,
                          "top_k": a.top_k, "loss": CACHE_RECIPE}
    lines = [f"{k:32s} {v['value']:.3f}  target {v['target']}  {'yes' if v['met'] else 'NO'}"
             for k, v in result["targets"].items()]
    lines.append("median step time (s): " + ", ".join(f"{n} {s:.4f}" for n, s in
                                                      result["cache_step_seconds"].items()))
    print("\n".join(lines), file=sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
