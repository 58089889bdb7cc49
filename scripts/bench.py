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
   and ``peak_mb`` per contender. ``--skip-tiny`` runs this part alone.

    pip install -e ".[bench]"          # TRL, for the kd_vs_trl comparison (skipped when missing)
    python scripts/bench.py [--json] [--steps 5] [--repeat 4] [--threads N]
    python scripts/bench.py --real-shapes --skip-tiny --gpu-batch 2 --gpu-seq 512 --json
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the per-feature benchmarks next to this file

import torch  # noqa: E402

from distill.runtime import tune_cpu_allocator  # noqa: E402

#: key -> (comparison, target, True when lower is better)
TARGETS = {
    "kd_vs_trl": (1.0, True),
    "crr_vs_kd": (1.3, True),
    "dp_vs_nondp": (1.3, True),
    "dp_mem_vs_nondp": (1.2, True),
    "eval_batched_speedup": (5.0, False),
    "cached_kd_vs_kd": (0.75, True),  # scripts/bench_cache.py
    "cached_crr_vs_cached_kd": (1.05, True),
}
#: the loss of the TRL comparison: what GKD computes (forward KL, no temperature, no other term)
MATCHED = dict(temperature=1.0, alpha_kd=1.0, alpha_lm=0.0, alpha_cos=0.0, optim="adamw_torch", learning_rate=1e-4)
#: the loss of our own comparisons (CRR, DP): the shipped GPT-2 -> DistilGPT-2 recipe
RECIPE = dict(temperature=2.0, alpha_kd=5.0, alpha_lm=2.0, alpha_cos=1.0, optim="adamw_torch", learning_rate=1e-4)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def gkd_classes():
    """TRL's ``(GKDConfig, GKDTrainer)``: in ``trl.experimental.gkd`` since TRL moved it there, top level before."""
    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError:
        from trl import GKDConfig, GKDTrainer
    return GKDConfig, GKDTrainer


def trl_available() -> bool:
    try:
        gkd_classes()
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# contenders
# ---------------------------------------------------------------------------------------------------------------
def make_gkd_trainer(student, teacher_dir: str, tokenizer, batch: int, workdir: str, teacher=None, bf16: bool = False):
    """TRL's GKDTrainer, off-policy (lmbda=0, beta=0), configured like our trainers (``teacher``: an already
    loaded teacher to share; ``bf16`` as ours)."""
    from transformers import AutoModelForCausalLM
    from datasets import Dataset
    from transformers.utils import logging as hf_logging

    GKDConfig, GKDTrainer = gkd_classes()

    hf_logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    no_checkpointing = ({"activation_checkpointing": False} if "activation_checkpointing" in
                        GKDConfig.__dataclass_fields__ else {"gradient_checkpointing": False})
    args = GKDConfig(output_dir=os.path.join(workdir, "trl"), lmbda=0.0, beta=0.0, seq_kd=False,
                     temperature=MATCHED["temperature"], learning_rate=MATCHED["learning_rate"], optim=MATCHED["optim"],
                     per_device_train_batch_size=batch, bf16=bf16, fp16=False, disable_dropout=False,
                     use_cpu=not cuda, report_to="none", seed=0, disable_tqdm=True, **no_checkpointing)
    teacher = teacher if teacher is not None else AutoModelForCausalLM.from_pretrained(teacher_dir)
    # the steps are fed by hand (training_step), so the dataset only satisfies the constructor
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"text": ["unused"]}), data_collator=lambda rows: rows)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    return trainer


def make_contenders(teacher_dir: str, batch: int, workdir: str, with_trl: bool) -> dict:
    """name -> trainer; every student starts from the same weights.

    ``kd_matched`` (our KD with GKD's loss) faces ``trl_gkd``; ``kd`` (the shipped recipe's loss) is the
    reference of ``crr``, the DP modes and ``kd_frozen`` (embeddings frozen as under DP).
    """
    from bench_dp import make_trainer

    trainers = {"kd": make_trainer("non-dp", teacher_dir, batch, workdir, **RECIPE)}
    student0 = copy.deepcopy(trainers["kd"].model)
    trainers["crr"] = make_trainer("non-dp", teacher_dir, batch, workdir + "/crr", perturbation="mean", **RECIPE)
    trainers["kd_frozen"] = make_trainer("non-dp-frozen", teacher_dir, batch, workdir, **RECIPE)
    for mode in ("fast", "hooks", "ghost"):
        trainers[f"dp_{mode}"] = make_trainer(mode, teacher_dir, batch, workdir, **RECIPE)
    if with_trl:
        trainers["kd_matched"] = make_trainer("non-dp", teacher_dir, batch, workdir + "/matched", **MATCHED)
        trainers["trl_gkd"] = make_gkd_trainer(copy.deepcopy(student0), teacher_dir, trainers["kd"].processing_class,
                                               batch, workdir)
    for t in trainers.values():
        t.model.load_state_dict(student0.state_dict(), strict=False)  # DP modes hold the same weights, some frozen
        t.model.train()
    return trainers


def demo_batch(tokenizer, batch: int, seq: int, device) -> dict:
    """``batch`` rows of ``seq`` tokens of the builtin demo corpus, collated by our collator."""
    from bench_crr import make_rows

    from distill.text_data import DistillationCollator
    from distill.builtin.corpus import CorpusSpec, generate_corpus

    rows = make_rows(tokenizer, generate_corpus(CorpusSpec(num_documents=max(64, 8 * batch), seed=1)), batch, seq)
    inputs = DistillationCollator(tokenizer.pad_token_id)([{"input_ids": r, "record_id": i}
                                                           for i, r in enumerate(rows)])
    return {k: v.to(device) for k, v in inputs.items()}


def inputs_for(name: str, batch: dict) -> dict:
    if name == "trl_gkd":  # what GKD's compute_loss reads
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    return batch


def timed_step(trainer, inputs: dict) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    trainer.training_step(trainer.model, dict(inputs))
    trainer.optimizer.step()
    trainer.model.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t


class Timings:
    """Step times per contender and round. Ratios are the median over rounds of each round's ratio of medians,
    so a machine whose speed drifts during the run (shared or throttled CPUs) hits both sides alike."""

    def __init__(self, rounds: list[dict[str, list[float]]]):
        self.rounds = rounds

    def median(self, name: str) -> float:
        return statistics.median(t for r in self.rounds for t in r[name])

    def ratio(self, a: str, b: str) -> float:
        return statistics.median(statistics.median(r[a]) / statistics.median(r[b]) for r in self.rounds)


def time_contenders(trainers: dict, batch: dict, steps: int, repeat: int, warmup: int) -> Timings:
    """Round-robin: each round runs ``steps`` steps of every contender, the order reversed every other round."""
    for name, t in trainers.items():
        for _ in range(warmup):
            timed_step(t, inputs_for(name, batch))
    rounds = []
    for i in range(repeat):
        order = list(trainers) if i % 2 == 0 else list(reversed(trainers))
        rounds.append({n: [timed_step(trainers[n], inputs_for(n, batch)) for _ in range(steps)] for n in order})
    return Timings(rounds)


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
    trainers = make_contenders(teacher_dir, a.batch, workdir, with_trl)
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
    from bench_dp import measure_memory

    nondp = measure_memory("non-dp", teacher_dir, a.batch, a.seq, extra=RECIPE)
    fast = measure_memory("fast", teacher_dir, a.batch, a.seq, extra=RECIPE)
    return {"dp_mem_vs_nondp": fast["train_peak_mb"] / nondp["train_peak_mb"],
            "memory_mb": {"non-dp": nondp, "dp_fast": fast}}


def bench_eval(a) -> dict:
    from bench_eval import time_generation, tiny_model_and_prompts

    model, tok, prompts = tiny_model_and_prompts(a.eval_prompts)
    r = time_generation(model, tok, prompts, max_new_tokens=a.eval_new_tokens, batch_size=a.eval_prompts,
                        repeats=1)
    return {"eval_batched_speedup": r["speedup"], "eval_seconds": {"batched": r["batched_s"],
                                                                   "one_at_a_time": r["single_s"]},
            "eval_identical_outputs": r["identical_outputs"]}


#: GPT-2-shape contenders: ours (fused loss unless ``kd_plain``), opacus ghost clipping, TRL's GKDTrainer
REAL_CONTENDERS = ("kd", "kd_plain", "crr", "dp_fast", "dp_ghost", "kd_matched", "trl_gkd")


def save_gpt2_shape_teacher(path: str, layers: int = 12, width: int = 768) -> str:
    """GPT-2 small's shapes (12 x 768, 50257 tokens, 1024 positions) with random weights, and GPT-2's tokenizer
    (``layers``/``width``: smaller teachers for smoke tests)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.builtin.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=layers, n_embd=width, n_head=max(1, width // 64),
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.eos_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_real_contender(name: str, teacher_dir: str, batch: int, workdir: str, teacher=None, bf16: bool = False,
                        student_layers: int = 6):
    """One GPT-2-shape contender (see :data:`REAL_CONTENDERS`): a 6-layer student copied from the teacher.

    ``kd``/``crr``/``dp_*``/``kd_plain`` use the shipped recipe's loss (``kd_plain`` with ``loss_chunk_size: off``,
    the unfused loss on full logits); ``kd_matched`` GKD's loss, against ``trl_gkd``.
    """
    from transformers import AutoModelForCausalLM

    from bench_dp import make_trainer
    from distill.distillation.student import build_student

    if teacher is None:
        teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    if name == "trl_gkd":
        from distill.model_loading import load_tokenizer

        student = build_student(teacher, num_layers=student_layers)
        return make_gkd_trainer(student, teacher_dir, load_tokenizer(teacher_dir), batch, workdir, teacher=teacher,
                                bf16=bf16)
    mode = {"dp_fast": "fast", "dp_ghost": "ghost"}.get(name, "non-dp")
    extra = dict(MATCHED if name == "kd_matched" else RECIPE, student_num_layers=student_layers, bf16=bf16)
    if name == "crr":
        extra["perturbation"] = "mean"
    if name == "kd_plain":
        extra["loss_chunk_size"] = "off"
    trainer = make_trainer(mode, teacher_dir, batch, os.path.join(workdir, name), teacher_model=teacher, **extra)
    trainer.model.train()
    return trainer


def real_memory_child(name: str, teacher_dir: str, batch: int, seq: int, steps: int, bf16: bool,
                      student_layers: int = 6) -> dict:
    """In a fresh process: the peak memory of ``name``'s training steps (see ``bench_dp.peak_memory``)."""
    from bench_dp import peak_memory

    if name == "trl_gkd":
        gkd_classes()  # TRL's imports before the baseline, like opacus'

    def build(work):
        trainer = make_real_contender(name, teacher_dir, batch, work, bf16=bf16, student_layers=student_layers)
        batch_ = demo_batch(trainer.processing_class, batch, seq, trainer.args.device)
        return trainer, inputs_for(name, batch_)

    return {"contender": name, **peak_memory(build, steps)}


def measure_real_memory(name: str, a, teacher_dir: str) -> dict:
    """:func:`real_memory_child` in a fresh interpreter."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--_real-memory-child", name, "--_teacher", teacher_dir,
           "--gpu-batch", str(a.gpu_batch), "--gpu-seq", str(a.gpu_seq), "--real-memory-steps",
           str(a.real_memory_steps), "--real-student-layers", str(a.real_student_layers)] + (["--bf16"] if a.bf16
                                                                                            else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def real_shape_contenders(a, with_trl: bool) -> list[str]:
    names = [n for n in (a.real_contenders.split(",") if a.real_contenders else REAL_CONTENDERS)]
    unknown = sorted(set(names) - set(REAL_CONTENDERS))
    if unknown:
        raise SystemExit(f"--real-contenders: unknown {', '.join(unknown)}; choose from {', '.join(REAL_CONTENDERS)}")
    return [n for n in names if with_trl or n != "trl_gkd"]


def bench_real_shapes(a, workdir: str, with_trl: bool) -> dict:
    """GPT-2 (12 x 768, 50257) -> 6-layer student, random weights: peak memory of each contender in a fresh
    process, then step times round-robin in one process (one shared teacher), tokens/s and the ratios."""
    from transformers import AutoModelForCausalLM

    teacher_dir = save_gpt2_shape_teacher(os.path.join(workdir, "gpt2-shape"), a.real_teacher_layers, a.real_width)
    names = real_shape_contenders(a, with_trl)
    memory = {}
    for name in names:
        log(f"  peak memory: {name} (fresh process)")
        memory[name] = measure_real_memory(name, a, teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    trainers = {}
    for name in names:
        trainers[name] = make_real_contender(name, teacher_dir, a.gpu_batch, workdir, teacher=teacher, bf16=a.bf16,
                                             student_layers=a.real_student_layers)
    first = trainers[names[0]]
    batch = demo_batch(first.processing_class, a.gpu_batch, a.gpu_seq, first.args.device)
    log(f"  step times: {a.real_repeat} rounds x {a.real_steps} steps per contender, round-robin")
    timings = time_contenders(trainers, batch, a.real_steps, a.real_repeat, a.real_warmup)
    med = {n: timings.median(n) for n in trainers}
    peak = {n: m["train_peak_mb"] for n, m in memory.items()}
    tokens = a.gpu_batch * a.gpu_seq

    def ratio(x, y, table=None):
        if x not in trainers or y not in trainers:
            return None
        return table[x] / table[y] if table is not None else timings.ratio(x, y)

    return {"batch": a.gpu_batch, "seq": a.gpu_seq, "bf16": a.bf16,
            "kd_vs_trl": ratio("kd_matched", "trl_gkd"), "kd_mem_vs_trl": ratio("kd_matched", "trl_gkd", peak),
            "crr_vs_kd": ratio("crr", "kd"), "dp_vs_nondp": ratio("dp_fast", "kd"),
            "dp_mem_vs_nondp": ratio("dp_fast", "kd", peak), "ghost_vs_nondp": ratio("dp_ghost", "kd"),
            "ghost_mem_vs_nondp": ratio("dp_ghost", "kd", peak), "fused_vs_plain": ratio("kd", "kd_plain"),
            "fused_mem_vs_plain": ratio("kd", "kd_plain", peak), "peak_mb": peak,
            "tokens_per_second": {n: tokens / s for n, s in med.items()}, "step_seconds": med,
            "memory": memory, "settings": {"repeat": a.real_repeat, "steps": a.real_steps, "warmup": a.real_warmup,
                                           "memory_steps": a.real_memory_steps,
                                           "teacher": f"GPT-2 {a.real_teacher_layers}x{a.real_width}, vocab 50257, "
                                                      "random weights",
                                           "student": f"{a.real_student_layers} blocks copied from the teacher"}}


#: GPT-2-shape targets (value of ``real_shapes[key]``), from the issue that set them
REAL_TARGETS = {"kd_mem_vs_trl": 0.5, "kd_vs_trl": 0.9, "crr_vs_kd": 1.3, "dp_vs_nondp": 1.3, "dp_mem_vs_nondp": 1.2}


# ---------------------------------------------------------------------------------------------------------------
def environment() -> dict:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu: {cpu}"
    return {"device": device, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "transformers", "accelerate", "opacus", "trl")}}


def verdicts(result: dict, targets: dict | None = None) -> dict:
    """``{key: {value, target, met}}`` for the tiny-shape targets, or for ``targets`` (``key -> upper bound``)."""
    table = TARGETS if targets is None else {k: (v, True) for k, v in targets.items()}
    out = {}
    for key, (target, lower) in table.items():
        value = result.get(key)
        met = None if value is None else (value <= target if lower else value >= target)
        out[key] = {"value": value, "target": f"{'<=' if lower else '>='} {target}", "met": met}
    return out


def _verdict_lines(targets: dict) -> list[str]:
    lines = [f"{'comparison':24s} {'ratio':>8s} {'target':>8s}  met", "-" * 48]
    for key, v in targets.items():
        value = "n/a" if v["value"] is None else f"{v['value']:.2f}x"
        met = "-" if v["met"] is None else ("yes" if v["met"] else "NO")
        lines.append(f"{key:24s} {value:>8s} {v['target']:>8s}  {met}")
    return lines


def format_table(result: dict) -> str:
    lines = _verdict_lines(result["targets"]) if result.get("targets") else []
    for key in ("opacus_hooks_vs_nondp", "opacus_ghost_vs_nondp", "dp_vs_nondp_frozen"):
        if result.get(key) is not None:
            lines.append(f"{key:24s} {result[key]:7.2f}x {'(info)':>8s}")
    if result.get("memory_mb"):
        m = result["memory_mb"]
        lines.append(f"training memory (peak above the post-import baseline): non-DP {m['non-dp']['train_peak_mb']:.0f} "
                     f"MB, DP fast {m['dp_fast']['train_peak_mb']:.0f} MB")
    if result.get("step_seconds"):
        lines.append("median step time (s): " + ", ".join(f"{n} {s:.4f}" for n, s in result["step_seconds"].items()))
    if result.get("loss_parity_abs_diff") is not None:
        lines.append(f"our KD loss vs GKD's loss on the batch: |diff| = {result['loss_parity_abs_diff']:.2e}")
    if result.get("real_shapes"):
        r = result["real_shapes"]
        lines.append(f"{r['settings']['teacher']} -> {r['settings']['student']}, batch {r['batch']} x {r['seq']}"
                     f"{', bf16' if r['bf16'] else ''}:")
        lines += _verdict_lines(r["targets"])
        for key in ("ghost_vs_nondp", "ghost_mem_vs_nondp", "fused_vs_plain", "fused_mem_vs_plain"):
            if r.get(key) is not None:
                lines.append(f"{key:24s} {r[key]:7.2f}x {'(info)':>8s}")
        lines.append("peak training memory (MB): " + ", ".join(f"{n} {v:,.0f}" for n, v in r["peak_mb"].items()))
        lines.append("median step time (s): " + ", ".join(f"{n} {v:.2f}" for n, v in r["step_seconds"].items()))
        lines.append("tokens/s: " + ", ".join(f"{n} {v:,.0f}" for n, v in r["tokens_per_second"].items()))
    if result.get("notes"):
        lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


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
    ap.add_argument("--_real-memory-child", dest="real_memory_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_teacher", dest="teacher", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.real_memory_child:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        r = real_memory_child(a.real_memory_child, a.teacher, a.gpu_batch, a.gpu_seq, a.real_memory_steps, a.bf16,
                              a.real_student_layers)
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
    from bench_dp import make_teacher

    with_trl = trl_available()
    result: dict = {"notes": []}
    if not with_trl:
        result["notes"].append("TRL is not installed, kd_vs_trl skipped: pip install -e '.[bench]'")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        if not a.skip_tiny:
            teacher = make_teacher(os.path.join(work, "teacher"))
            log(f"[1/4] step times: {a.repeat} rounds x {a.steps} steps per contender, batch {a.batch} x {a.seq}")
            result.update(bench_steps(a, teacher, work, with_trl))
            from bench_cache import bench_cache  # training from a teacher cache

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
                from bench_cache import bench_cache_real_shapes

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
