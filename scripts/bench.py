"""fair-distill side by side with its peers and with itself: step-time and memory ratios, one run, one machine.

Every contender gets the same tiny GPT-2 teacher (4 blocks x 64, GPT-2's real 50257-token vocabulary, random
weights), the same 2-block student copied from it, the same optimizer (AdamW, lr 1e-4) and the same batch: rows
of the builtin demo corpus in GPT-2's BPE, so the counterfactual step sees realistic gendered text. Our own
comparisons (2-4) use the loss of the shipped GPT-2 -> DistilGPT-2 recipe (T = 2, alpha_kd 5, alpha_lm 2,
alpha_cos 1); the TRL comparison uses the loss GKD computes.

1. ``kd_vs_trl``: our plain KD step vs TRL's ``GKDTrainer`` (``trl.experimental.gkd``) used off-policy:
   ``lmbda=0`` (no student generation), ``beta=0`` (forward KL, our KD loss), temperature 1.0 on both sides
   (GKD's loss applies no temperature, so 1.0 is the value at which both compute the same loss: the script checks
   that the two loss functions agree on the batch), TRL's bf16 and gradient checkpointing turned off as ours are,
   dropout left on in both students.
2. ``crr_vs_kd``: our counterfactual-role-reversal step (``perturbation: mean``) vs our KD step.
3. ``dp_vs_nondp``: DP-SGD in ``dp_mode: fast`` vs the non-DP step; ``opacus_hooks_vs_nondp``: opacus'
   per-sample-gradient hooks vs the non-DP step (``opacus_ghost_vs_nondp`` too). DP freezes the tied
   embeddings, which the non-DP step trains, so ``dp_vs_nondp_frozen`` also compares with a non-DP step whose
   embeddings are frozen: the cost of per-record clipping alone.
4. ``dp_mem_vs_nondp``: the peak memory a DP (fast) training needs over the non-DP one, each in a fresh process.
   On CPU, RSS high-water mark during the steps minus the RSS after all imports (tracemalloc cannot see
   PyTorch's allocator); on a GPU, ``torch.cuda.max_memory_allocated``.
5. ``eval_batched_speedup``: fairness-evaluation generation (64 builtin profession prompts x 20 new tokens,
   greedy) one prompt at a time over batched.

A step is the trainer's own ``training_step`` (student forward, teacher targets, loss, backward) plus the
optimizer step and ``zero_grad``. Contenders run round-robin (``--repeat`` rounds of ``--steps`` steps each,
after ``--warmup`` steps each, the order reversed every other round); a ratio is the median over rounds of the
round's ratio of median step times, so drifting machine load hits both sides alike.
6. ``real_shapes`` (on a GPU, or with ``--real-shapes``): GPT-2 small's shapes (12 x 768 teacher, 50257 tokens,
   random weights) -> a 6-layer student copied from it, batch ``--gpu-batch`` x ``--gpu-seq``. Contenders
   ``kd``, ``crr``, ``dp_fast``, ``dp_ghost`` (opacus ghost clipping), ``kd_plain`` (``loss_chunk_size: off``: the
   unfused loss on full logits), ``kd_matched`` (GKD's loss) and ``trl_gkd``. First the peak memory of each in a
   fresh process (as in 4), then step times round-robin in one process that shares one teacher; ratios
   ``kd_vs_trl``, ``kd_mem_vs_trl``, ``crr_vs_kd``, ``dp_vs_nondp``, ``dp_mem_vs_nondp``, ``fused_vs_plain``, ...
   and ``peak_mb`` per contender. ``--skip-tiny`` runs this part alone. ``--mem-batch/--mem-seq``: the memory runs
   at that shape instead (``memory_shape``); ``floor_mb`` is the analytic floor (student weights + gradients +
   AdamW state + teacher weights, in the run's dtypes) and ``kd_peak_vs_floor`` KD's peak over it. A TRL run on a
   CPU is capped at 18 GB of address space and reported as ``"oom"`` when it does not fit (a ratio against it is
   then taken against the cap). ``--recipe-memory``: KD at the recipe's 8 x 1024 with its step settings, as
   configured (``recipe_peak_mb``) and with ``gradient_checkpointing: true``
   (``recipe_peak_mb_checkpointing``), and TRL GKD at the same shape (``recipe_trl_peak_mb``: MB or ``"oom"``).
   ``cached_kd_vs_kd``: KD from a teacher cache (``build_teacher_cache``, what ``distill cache-teacher`` runs)
   over online KD at GPT-2 shapes. Measured tables: docs/performance.md.

``--compile-loss`` runs our contenders with ``compile_loss: true`` (the KD term through ``torch.compile``; the
compile falls in the warm-up steps), TRL's as it is.

    pip install -e ".[bench]"          # TRL, for the kd_vs_trl comparison (skipped when missing)
    python scripts/bench.py [--json] [--steps 5] [--repeat 4] [--threads N]
    python scripts/bench.py --real-shapes --skip-tiny --gpu-batch 2 --gpu-seq 512 --json
    python scripts/bench.py --real-shapes --skip-tiny --gpu-batch 2 --gpu-seq 512 --mem-batch 4 --mem-seq 1024 \
        --recipe-memory --json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

from bench_common import (  # noqa: E402  (scripts/, next to this file)
    MATCHED, REAL_CONTENDERS, REAL_TARGETS, RECIPE, bench_cache, bench_cache_real_shapes, bench_real_shapes,
    demo_batch, environment, format_table, gkd_classes, log, make_gkd_trainer, make_teacher, make_trainer,
    measure_memory, real_memory_child, time_contenders, time_generation, tiny_model_and_prompts, trl_available,
    verdicts)
from distill.runtime import tune_cpu_allocator  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# contenders
# ---------------------------------------------------------------------------------------------------------------


def make_contenders(teacher_dir: str, batch: int, workdir: str, with_trl: bool, ours: dict | None = None) -> dict:
    """name -> trainer; every student starts from the same weights (``ours``: further config keys of our trainers).

    ``kd_matched`` (our KD with GKD's loss) faces ``trl_gkd``; ``kd`` (the shipped recipe's loss) is the
    reference of ``crr``, the DP modes and ``kd_frozen`` (embeddings frozen as under DP).
    """
    recipe, matched = {**RECIPE, **(ours or {})}, {**MATCHED, **(ours or {})}
    trainers = {"kd": make_trainer("non-dp", teacher_dir, batch, workdir, **recipe)}
    student0 = copy.deepcopy(trainers["kd"].model)
    trainers["crr"] = make_trainer("non-dp", teacher_dir, batch, workdir + "/crr", perturbation="mean", **recipe)
    trainers["kd_frozen"] = make_trainer("non-dp-frozen", teacher_dir, batch, workdir, **recipe)
    for mode in ("fast", "hooks", "ghost"):
        trainers[f"dp_{mode}"] = make_trainer(mode, teacher_dir, batch, workdir, **recipe)
    if with_trl:
        trainers["kd_matched"] = make_trainer("non-dp", teacher_dir, batch, workdir + "/matched", **matched)
        trainers["trl_gkd"] = make_gkd_trainer(copy.deepcopy(student0), teacher_dir, trainers["kd"].processing_class,
                                               batch, workdir)
    for t in trainers.values():
        t.model.load_state_dict(student0.state_dict(), strict=False)  # DP modes hold the same weights, some frozen
        t.model.train()
    return trainers


def check_loss_parity(trainers: dict, batch: dict) -> float:
    """|our KD loss - GKD's loss| on the batch, same student and teacher logits, same positions (eval mode)."""
    from distill.distillation.losses import kd_loss, teacher_log_probs

    kd = trainers["kd_matched"]
    model_inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    kd.model.eval()
    with torch.no_grad():
        s = kd.model(**model_inputs).logits[:, :-1]
        t = kd.teacher(**model_inputs).logits[:, :-1]
    kd.model.train()
    labels = batch["labels"][:, 1:]
    ours = kd_loss(s, teacher_log_probs(t, 1.0), (labels != -100).long(), 1.0)
    theirs = gkd_classes()[1].generalized_jsd_loss(s, t, labels=labels, beta=0.0)
    return float((ours - theirs).abs())


# ---------------------------------------------------------------------------------------------------------------
# the parts
# ---------------------------------------------------------------------------------------------------------------
def bench_steps(a, teacher_dir: str, workdir: str, with_trl: bool) -> dict:
    trainers = make_contenders(teacher_dir, a.batch, workdir, with_trl,
                               {"compile_loss": True} if getattr(a, "compile_loss", False) else None)
    batch = demo_batch(trainers["kd"].processing_class, a.batch, a.seq, trainers["kd"].args.device)
    out: dict = {"gendered_row_share": float((trainers["crr"].token_swapper.swap_tokens(batch["input_ids"])
                                              != batch["input_ids"]).any(-1).float().mean())}
    if with_trl:
        out["loss_parity_abs_diff"] = check_loss_parity(trainers, batch)
    timings = time_contenders(trainers, batch, a.steps, a.repeat, a.warmup)
    out["step_seconds"] = {n: timings.median(n) for n in trainers}
    out["kd_vs_trl"] = timings.ratio("kd_matched", "trl_gkd") if with_trl else None
    out["crr_vs_kd"] = timings.ratio("crr", "kd")
    out["dp_vs_nondp"] = timings.ratio("dp_fast", "kd")
    out["opacus_hooks_vs_nondp"] = timings.ratio("dp_hooks", "kd")
    out["opacus_ghost_vs_nondp"] = timings.ratio("dp_ghost", "kd")
    out["dp_vs_nondp_frozen"] = timings.ratio("dp_fast", "kd_frozen")
    return out


def bench_memory(a, teacher_dir: str) -> dict:
    nondp = measure_memory("non-dp", teacher_dir, a.batch, a.seq, extra=RECIPE)
    fast = measure_memory("fast", teacher_dir, a.batch, a.seq, extra=RECIPE)
    return {"dp_mem_vs_nondp": fast["train_peak_mb"] / nondp["train_peak_mb"],
            "memory_mb": {"non-dp": nondp, "dp_fast": fast}}


def bench_eval(a) -> dict:
    model, tok, prompts = tiny_model_and_prompts(a.eval_prompts)
    r = time_generation(model, tok, prompts, max_new_tokens=a.eval_new_tokens, batch_size=a.eval_prompts,
                        repeats=1)
    return {"eval_batched_speedup": r["speedup"], "eval_seconds": {"batched": r["batched_s"],
                                                                   "one_at_a_time": r["single_s"]},
            "eval_identical_outputs": r["identical_outputs"]}


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per contender per round")
    ap.add_argument("--repeat", type=int, default=8, help="rounds (the contenders' order reverses every round)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--eval-prompts", type=int, default=64)
    ap.add_argument("--eval-new-tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory comparison (two fresh processes)")
    ap.add_argument("--real-shapes", action="store_true",
                    help="also measure GPT-2 shapes on CPU (default: on a GPU only): memory, step time, TRL")
    ap.add_argument("--skip-tiny", action="store_true", help="only the GPT-2-shape part (with --real-shapes)")
    ap.add_argument("--gpu-batch", "--real-batch", dest="gpu_batch", type=int, default=8,
                    help="GPT-2-shape batch size (rows)")
    ap.add_argument("--gpu-seq", "--real-seq", dest="gpu_seq", type=int, default=512,
                    help="GPT-2-shape sequence length (tokens)")
    ap.add_argument("--mem-batch", type=int, default=None,
                    help="GPT-2 shapes: batch size of the peak-memory runs (default: --gpu-batch)")
    ap.add_argument("--mem-seq", type=int, default=None,
                    help="GPT-2 shapes: sequence length of the peak-memory runs (default: --gpu-seq)")
    ap.add_argument("--recipe-memory", action="store_true",
                    help="GPT-2 shapes: KD's peak at the recipe's 8 x 1024 (as configured and with gradient "
                         "checkpointing) and TRL GKD's at the same shape (or 'oom'), one fresh process each")
    ap.add_argument("--recipe-shape", default="8x1024", help="rows x tokens of --recipe-memory (the recipe's: 8x1024)")
    ap.add_argument("--skip-cache", action="store_true",
                    help="GPT-2 shapes: skip the teacher-cache contender (cached_kd_vs_kd)")
    ap.add_argument("--real-repeat", type=int, default=2, help="GPT-2 shapes: rounds of the round-robin")
    ap.add_argument("--real-steps", type=int, default=1, help="GPT-2 shapes: timed steps per contender per round")
    ap.add_argument("--real-warmup", type=int, default=1, help="GPT-2 shapes: untimed steps per contender first")
    ap.add_argument("--real-memory-steps", type=int, default=1,
                    help="GPT-2 shapes: steps measured for peak memory (after one untimed step)")
    ap.add_argument("--real-contenders", default=None,
                    help=f"comma-separated subset of {','.join(REAL_CONTENDERS)} (default: all)")
    ap.add_argument("--bf16", action="store_true", help="GPT-2 shapes in bf16 mixed precision (all contenders)")
    ap.add_argument("--real-teacher-layers", type=int, default=12, help="teacher depth (GPT-2 small: 12)")
    ap.add_argument("--real-width", type=int, default=768, help="teacher and student width (GPT-2 small: 768)")
    ap.add_argument("--real-student-layers", type=int, default=6, help="student depth (DistilGPT-2: 6)")
    ap.add_argument("--loss-chunk-size", type=int, default=None,
                    help="GPT-2 shapes: our contenders' loss_chunk_size (default: the config's auto; kd_plain: off)")
    ap.add_argument("--compile-loss", action="store_true",
                    help="our contenders with compile_loss: true (warm-up steps absorb the compile; default: off, "
                         "as in the config)")
    ap.add_argument("--_real-memory-child", dest="real_memory_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_teacher", dest="teacher", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_extra", dest="extra", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_rlimit-gb", dest="rlimit_gb", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.real_memory_child:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        r = real_memory_child(a.real_memory_child, a.teacher, a.gpu_batch, a.gpu_seq, a.real_memory_steps, a.bf16,
                              a.real_student_layers, extra=json.loads(a.extra) if a.extra else None,
                              rlimit_gb=a.rlimit_gb)
        print(json.dumps(r))
        return r
    if a.skip_tiny and not a.real_shapes:
        ap.error("--skip-tiny leaves nothing to run without --real-shapes")
    tune_cpu_allocator()
    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["BENCH_THREADS"] = str(a.threads)  # for the memory subprocesses
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with_trl = trl_available()
    result: dict = {"notes": [], "compile_loss": a.compile_loss}
    if not with_trl:
        result["notes"].append("TRL is not installed, kd_vs_trl skipped: pip install -e '.[bench]'")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        if not a.skip_tiny:
            teacher = make_teacher(os.path.join(work, "teacher"))
            log(f"[1/4] step times: {a.repeat} rounds x {a.steps} steps per contender, batch {a.batch} x {a.seq}")
            result.update(bench_steps(a, teacher, work, with_trl))
            result.update(bench_cache(teacher, work, batch=a.batch, seq=a.seq, steps=a.steps, repeat=a.repeat,
                                      warmup=a.warmup))
            if not a.no_memory:
                log("[2/4] peak memory, DP vs non-DP (fresh process each)")
                result.update(bench_memory(a, teacher))
            log(f"[3/4] fairness-evaluation generation: {a.eval_prompts} prompts x {a.eval_new_tokens} tokens")
            result.update(bench_eval(a))
            result["targets"] = verdicts(result)
        if torch.cuda.is_available() or a.real_shapes:
            log(f"[4/4] GPT-2 -> 6-layer student at real shapes, batch {a.gpu_batch} x {a.gpu_seq}")
            result["real_shapes"] = bench_real_shapes(a, work, with_trl)
            if not a.skip_cache:
                result["real_shapes"]["cached_kd_vs_kd"] = bench_cache_real_shapes(
                    work, batch=a.gpu_batch, seq=a.gpu_seq, steps=a.real_steps, repeat=a.real_repeat,
                    warmup=a.real_warmup)["cached_kd_vs_kd"]
            result["real_shapes"]["targets"] = verdicts(result["real_shapes"], REAL_TARGETS)
        else:
            result["real_shapes"] = None
            result["notes"].append("no GPU: GPT-2-shape memory and throughput not measured (--real-shapes forces it)")
    result["settings"] = {"batch": a.batch, "seq": a.seq, "steps": a.steps, "repeat": a.repeat, "warmup": a.warmup,
                          "teacher": "GPT-2 4x64, vocab 50257", "student": "2 blocks copied from the teacher",
                          "loss_vs_trl": MATCHED, "loss_otherwise": RECIPE}
    result["env"] = environment()
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    table = format_table(result)
    if a.json:
        log(table)
        print(json.dumps(result, indent=2))
    else:
        print(table)
        print(f"({result['env']['device']}, {result['env']['torch_threads']} torch threads, torch "
              f"{result['env']['torch']}, transformers {result['env']['transformers']}, "
              f"{result['wall_seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
