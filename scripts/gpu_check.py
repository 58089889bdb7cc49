"""One command for a lent GPU: GPT-2-shape throughput and memory of every contender, and a short KD run.

1. ``real_shapes``: ``scripts/bench.py``'s GPT-2-shape part (``bench_common.bench_real_shapes``) — GPT-2 small's shapes (12 x 768, 50257 tokens) with
   random weights as the teacher, a 6-layer student copied from it, batch ``--batch`` x ``--seq`` (8 x 1024), bf16
   mixed precision on a GPU: the peak memory of each contender in a fresh process (``max_memory_allocated``), then
   step times round-robin, tokens/s and the ratios (ours vs TRL's GKDTrainer, CRR vs KD, DP vs non-DP), the same
   keys as ``bench.py --real-shapes`` (``memory_shape``, ``floor_mb``, ``kd_peak_vs_floor``, ``recipe_peak_mb``,
   ``recipe_peak_mb_checkpointing``, ``recipe_trl_peak_mb`` with ``--recipe-memory``, on by default on a GPU) plus
   ``kd_tokens_per_second_vs_trl`` (``kd_matched`` vs ``trl_gkd`` on the same card).
   ``cached_kd_vs_kd``: KD from a teacher cache over online KD at the same shape (``bench_cache_real_shapes``;
   ``--skip-cache`` leaves it out).
2. ``kd_run``: ``--kd-steps`` (200) optimizer steps of our KD trainer (the shipped recipe's loss, fused output
   layers) on random token rows, logging the loss of every step: it must fall (``falling``: the mean of the
   last tenth of the steps below the mean of the first tenth).

One JSON object goes to stdout (and to ``--out``, rewritten after each part, so that a run cut short keeps what
it measured). On a CPU the same runs with small flags as a smoke test:

    python scripts/gpu_check.py --out gpu_check.json              # on the GPU: 265 s on an H200 (docs/performance.md)
    python scripts/gpu_check.py --teacher-layers 2 --width 64 --student-layers 1 --batch 2 --seq 32 \
        --kd-steps 20 --contenders kd,kd_matched,trl_gkd,dp_fast             # CPU smoke test (minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

import bench_common as bench  # noqa: E402  (scripts/, next to this file)
from distill.runtime import tune_cpu_allocator  # noqa: E402


def kd_run(teacher_dir: str, workdir: str, batch: int, seq: int, steps: int, bf16: bool, student_layers: int = 6,
           seed: int = 0) -> dict:
    """``steps`` optimizer steps of the ``kd`` contender on random rows (a fixed pool of 16 batches, cycled)."""
    trainer = bench.make_real_contender("kd", teacher_dir, batch, workdir, bf16=bf16, student_layers=student_layers)
    g = torch.Generator().manual_seed(seed)
    pool = []
    for _ in range(16):
        ids = torch.randint(0, trainer.model.config.vocab_size, (batch, seq), generator=g)
        pool.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        inputs = {k: v.to(trainer.args.device) for k, v in pool[step % len(pool)].items()}
        losses.append(float(trainer.training_step(trainer.model, inputs)))
        trainer.optimizer.step()
        trainer.model.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    tenth = max(1, steps // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    return {"steps": steps, "batch": batch, "seq": seq, "bf16": bf16, "losses": losses, "first_mean": first,
            "last_mean": last, "falling": last < first, "seconds": seconds,
            "tokens_per_second": steps * batch * seq / seconds}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--kd-steps", type=int, default=200)
    ap.add_argument("--contenders", default=None, help=f"subset of {','.join(bench.REAL_CONTENDERS)} (default: all)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the round-robin timing")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per contender per round")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="auto: bf16 mixed precision on a GPU, float32 on a CPU")
    ap.add_argument("--teacher-layers", type=int, default=12, help="teacher depth (GPT-2 small: 12; less for smoke tests)")
    ap.add_argument("--width", type=int, default=768, help="model width (GPT-2 small: 768)")
    ap.add_argument("--student-layers", type=int, default=6)
    ap.add_argument("--mem-batch", type=int, default=None, help="batch of the peak-memory runs (default: --batch)")
    ap.add_argument("--mem-seq", type=int, default=None, help="length of the peak-memory runs (default: --seq)")
    ap.add_argument("--recipe-memory", choices=("auto", "on", "off"), default="auto",
                    help="KD at 8 x 1024 as configured and with gradient checkpointing, and TRL GKD at the same "
                         "shape (auto: on a GPU only)")
    ap.add_argument("--loss-chunk-size", type=int, default=None,
                    help="our contenders' loss_chunk_size (default: the config's auto; kd_plain stays off)")
    ap.add_argument("--skip-cache", action="store_true", help="leave out cached_kd_vs_kd")
    ap.add_argument("--out", default=None, help="also write the JSON object to this file (after each part)")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    bf16 = a.precision == "bf16" or (a.precision == "auto" and cuda)
    if not cuda:
        tune_cpu_allocator()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with_trl = bench.trl_available()
    opts = SimpleNamespace(gpu_batch=a.batch, gpu_seq=a.seq, real_repeat=a.repeat, real_steps=a.steps, real_warmup=1,
                           real_memory_steps=1, real_contenders=a.contenders, bf16=bf16,
                           real_teacher_layers=a.teacher_layers, real_width=a.width, real_student_layers=a.student_layers,
                           mem_batch=a.mem_batch, mem_seq=a.mem_seq, loss_chunk_size=a.loss_chunk_size,
                           recipe_memory=a.recipe_memory == "on" or (a.recipe_memory == "auto" and cuda))
    t0 = time.perf_counter()
    result: dict = {"env": bench.environment(), "notes": []}
    if not with_trl:
        result["notes"].append("TRL is not installed: trl_gkd skipped (pip install -e '.[bench]')")
    if not cuda:
        result["notes"].append("no GPU: a CPU smoke run, not GPU figures")
    with tempfile.TemporaryDirectory() as work:
        bench.log(f"[1/3] GPT-2 shapes, batch {a.batch} x {a.seq}{', bf16' if bf16 else ''}: memory, step times")
        real = bench.bench_real_shapes(opts, work, with_trl)
        tps = real["tokens_per_second"]
        real["kd_tokens_per_second_vs_trl"] = (tps["kd_matched"] / tps["trl_gkd"]
                                               if "kd_matched" in tps and "trl_gkd" in tps else None)
        result["real_shapes"] = real
        save(result, a.out)
        if not a.skip_cache:
            bench.log(f"[2/3] KD from a teacher cache vs online KD, batch {a.batch} x {a.seq}")
            cache = bench.bench_cache_real_shapes(work, batch=a.batch, seq=a.seq, steps=a.steps, repeat=a.repeat,
                                                  teacher_layers=a.teacher_layers, width=a.width,
                                                  student_layers=a.student_layers, bf16=bf16)
            real["cached_kd_vs_kd"] = cache["cached_kd_vs_kd"]
            real["cache"] = cache
        real["targets"] = bench.verdicts(real, bench.REAL_TARGETS)
        save(result, a.out)
        bench.log(f"[3/3] KD run: {a.kd_steps} steps on random rows")
        result["kd_run"] = kd_run(os.path.join(work, "gpt2-shape"), work, a.batch, a.seq, a.kd_steps, bf16,
                                  a.student_layers)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    bench.log(bench.format_table({"real_shapes": real, "notes": result["notes"]}))
    run = result["kd_run"]
    bench.log(f"KD run: loss {run['first_mean']:.4f} (first tenth) -> {run['last_mean']:.4f} (last tenth), "
              f"{'falling' if run['falling'] else 'NOT falling'}; {run['tokens_per_second']:,.0f} tokens/s; "
              f"{result['wall_seconds']:.0f} s in all")
    save(result, a.out)
    print(json.dumps(result, indent=2))
    return result


def save(result: dict, path: str | None) -> None:
    """Write ``result`` to ``path`` atomically (nothing without a path)."""
    if path:
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
