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
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from distill.runtime import tune_cpu_allocator  # noqa: E402

MODES = ("non-dp", "non-dp-frozen", "fast", "hooks", "ghost")


def make_trainer(mode: str, teacher_dir: str, batch: int, workdir: str, teacher_model=None, **extra):
    """A trainer for ``mode`` (see MODES); ``extra`` are further DistillationConfig keys. ``teacher_model``: an
    already loaded teacher to share between trainers (default: loaded from ``teacher_dir``)."""
    from transformers.utils import logging as hf_logging

    from distill.distillation.config import DistillationConfig
    from distill.distillation.trainer import DistillationTrainer

    hf_logging.set_verbosity_error()
    dp = {} if mode.startswith("non-dp") else dict(dp_enabled=True, dp_mode=mode, dp_noise_multiplier=1.0,
                                                   packing=False)
    keys = dict(output_dir=os.path.join(workdir, mode), teacher_model_name_or_path=teacher_dir,
                student_num_layers=2, per_device_train_batch_size=batch, learning_rate=1e-4,
                use_cpu=not torch.cuda.is_available(), report_to="none", seed=0, disable_tqdm=True, **dp)
    args = DistillationConfig(**{**keys, **extra})
    trainer = DistillationTrainer(args=args, teacher_model=teacher_model)
    if mode == "non-dp-frozen":
        from distill.privacy import freeze_embeddings

        freeze_embeddings(trainer.model)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    if trainer.privacy is not None:
        trainer.privacy.resolve(num_records=10_000, world_size=1)
    return trainer


def make_batch(trainer, batch: int, seq: int):
    from distill.text_data import DistillationCollator

    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 50257, (seq,), generator=g).tolist(), "record_id": i} for i in range(batch)]
    return DistillationCollator(pad_token_id=trainer.processing_class.pad_token_id)(rows)


def one_step(trainer, inputs) -> float:
    t = time.perf_counter()
    trainer.training_step(trainer.model, inputs)
    trainer.optimizer.step()
    trainer.model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def make_teacher(path: str) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.builtin.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=4, n_head=4,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _vm_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


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


def peak_memory(build, steps: int) -> dict:
    """Peak memory of ``steps`` training steps of the ``(trainer, inputs)`` that ``build(workdir)`` returns, in
    this (fresh) process: see :func:`memory_child`."""
    import opacus  # noqa: F401  (imported up front so that no mode's peak counts library imports)

    import distill.privacy  # noqa: F401
    import distill.distillation.trainer  # noqa: F401

    # glibc's allocator is left at its defaults here (no tune_cpu_allocator): with raised mmap/trim thresholds
    # freed tensors stay in the heap, and RSS would report what was once used instead of what is live
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    cuda = torch.cuda.is_available()
    base = _vm_kb("VmRSS")
    with tempfile.TemporaryDirectory() as work:
        trainer, inputs = build(work)
        one_step(trainer, inputs)  # optimizer state etc. exist from here on
        rest = _vm_kb("VmRSS")
        rest_cuda = torch.cuda.memory_allocated() if cuda else 0
        with open("/proc/self/clear_refs", "w") as fh:  # reset the peak-RSS high-water mark (Linux)
            fh.write("5")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            one_step(trainer, inputs)
        peak = _vm_kb("VmHWM")
        result = {"base_rss_mb": base / 1024, "rest_rss_mb": rest / 1024, "peak_rss_mb": peak / 1024,
                  "train_peak_mb": (peak - base) / 1024, "step_peak_over_rest_mb": (peak - rest) / 1024}
        if cuda:
            peak_cuda = torch.cuda.max_memory_allocated()
            result.update(train_peak_mb=peak_cuda / 2**20, step_peak_over_rest_mb=(peak_cuda - rest_cuda) / 2**20,
                          device="cuda")
    return result


def measure_memory(mode: str, teacher: str, batch: int, seq: int, steps: int = 3, extra: dict | None = None) -> dict:
    """:func:`memory_child` in a fresh interpreter (so that one mode's allocations never count for another)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", mode, "--_teacher", teacher,
           "--batch", str(batch), "--seq", str(seq), "--steps", str(steps), "--_extra", json.dumps(extra or {})]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
