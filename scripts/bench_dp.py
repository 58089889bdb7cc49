"""Step time and peak memory of DP-SGD modes vs a non-DP distillation step (tiny GPT-2, CPU).

Same teacher (4 blocks × 64, GPT-2's real 50257-token vocabulary), same 2-block student, same batch for every
mode; each mode runs the trainer's own ``training_step`` + optimizer step + ``zero_grad``:

* ``non-dp``   — DistillationTrainer without DP (student trains all weights, incl. tied embeddings);
* ``non-dp-frozen`` — without DP, embeddings frozen as under DP (isolates the cost of per-record clipping);
* ``fast``     — dp_mode fast (book-keeping per-record clipping, one backward);
* ``hooks``    — dp_mode hooks (opacus per-sample gradients);
* ``ghost``    — dp_mode ghost (opacus ghost clipping, two backward passes).

Timing: modes are interleaved round-robin (``--rounds`` rounds of ``--steps`` steps each), the first
``--warmup`` steps of each mode excluded; the median step time per mode is reported with its ratio to
non-DP. Peak memory: each mode in a fresh subprocess, the peak RSS (``VmHWM``, reset after setup) during 3 steps
(tracemalloc does not see PyTorch's tensor allocations, so it would report nothing useful here).

    PYTHONPATH=. python scripts/bench_dp.py [--batch 8 --seq 64 --rounds 5 --steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench_common import MODES, make_teacher, make_trainer, measure_memory, one_step, peak_memory  # noqa: E402
from distill.runtime import tune_cpu_allocator  # noqa: E402


def make_batch(trainer, batch: int, seq: int):
    from distill.text_data import DistillationCollator

    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 50257, (seq,), generator=g).tolist(), "record_id": i} for i in range(batch)]
    return DistillationCollator(pad_token_id=trainer.processing_class.pad_token_id)(rows)


def memory_child(mode: str, teacher: str, batch: int, seq: int, steps: int, extra: dict | None = None) -> None:
    """Run in a fresh process: peak memory of ``steps`` training steps of ``mode``, printed as one JSON line.

    ``base_rss_mb`` is the RSS after every import (transformers, opacus, ...) but before any model exists;
    ``peak_rss_mb`` the high-water mark over the timed steps (reset after a first step), so ``train_peak_mb =
    peak - base`` is the memory the training needs (models, optimizer state, activations, per-sample state): on
    CPU the counterpart of CUDA's ``max_memory_allocated``, which is what is reported on a GPU.
    """
    def build(work):
        trainer = make_trainer(mode, teacher, batch, work, **(extra or {}))
        return trainer, make_batch(trainer, batch, seq)

    print(json.dumps({"mode": mode, **peak_memory(build, steps)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="steps per mode per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's). On a machine shared with other jobs, 1 thread "
                         "avoids measuring thread-pool wake-up stalls instead of compute.")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_teacher", dest="teacher", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_extra", dest="extra", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args()
    modes = a.modes.split(",")
    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["BENCH_THREADS"] = str(a.threads)
    if a.memory_child:
        memory_child(a.memory_child, a.teacher, a.batch, a.seq, a.steps, json.loads(a.extra))
        return
    tune_cpu_allocator()
    with tempfile.TemporaryDirectory() as work:
        teacher = make_teacher(os.path.join(work, "teacher"))
        trainers = {m: make_trainer(m, teacher, a.batch, work) for m in modes}
        inputs = {m: make_batch(trainers[m], a.batch, a.seq) for m in modes}
        times: dict[str, list[float]] = {m: [] for m in modes}
        for m in modes:
            for _ in range(a.warmup):
                one_step(trainers[m], inputs[m])
        for _ in range(a.rounds):
            for m in modes:
                times[m].extend(one_step(trainers[m], inputs[m]) for _ in range(a.steps))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {a.batch} x {a.seq} tokens; "
              f"{a.rounds} rounds x {a.steps} steps per mode, {a.warmup} warm-up steps excluded")
        base = statistics.median(times["non-dp"]) if "non-dp" in times else None
        frozen = statistics.median(times["non-dp-frozen"]) if "non-dp-frozen" in times else None
        print(f"{'mode':14s} {'median s/step':>14s} {'vs non-dp':>10s} {'vs non-dp-frozen':>17s}")
        for m in modes:
            med = statistics.median(times[m])
            r1 = f"{med / base:.2f}x" if base else "-"
            r2 = f"{med / frozen:.2f}x" if frozen else "-"
            print(f"{m:14s} {med:14.4f} {r1:>10s} {r2:>17s}")
        if not a.no_memory:
            print("peak memory (fresh process per mode):")
            for m in modes:
                try:
                    r = measure_memory(m, teacher, a.batch, a.seq)
                except RuntimeError as err:
                    print(f"{m:14s} {err}")
                    continue
                print(f"{m:14s} peak RSS during steps {r['peak_rss_mb']:8.1f} MB, "
                      f"above the post-import baseline {r['train_peak_mb']:8.1f} MB")


if __name__ == "__main__":
    main()
