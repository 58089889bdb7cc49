"""Helpers the benchmark scripts share: the one place they import from (no script imports another script).

* timing: :func:`timed_step`, :class:`Timings` (medians of per-round ratios), :func:`time_round_robin`,
  :func:`time_steps`;
* peak memory in a fresh process: :func:`peak_memory`, :func:`measure_memory` (``bench_dp.py``'s child),
  :func:`measure_real_memory` (``bench.py``'s child);
* models and rows: :func:`make_teacher` (GPT-2 4 x 64), :func:`save_gpt2_shape_teacher`, :func:`make_trainer`
  (our trainer per DP mode; it builds teacher + student from its config through
  :func:`distill.distillation.models.build_models`), :func:`make_gkd_trainer` (TRL), :func:`make_rows`;
* the shared parts: the GPT-2-shape comparison (:func:`bench_real_shapes`, used by ``bench.py`` and
  ``gpu_check.py``), the teacher-cache comparison (:func:`bench_cache`, used by ``bench.py`` and
  ``bench_cache.py``), generation timing (:func:`time_generation`, used by ``bench.py`` and ``bench_eval.py``);
* reporting: :func:`environment`, :func:`verdicts`, :func:`format_table`, :func:`log`.

The scripts put their own folder on ``sys.path`` and ``import bench_common``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
#: the scripts whose hidden ``--_*-memory-child`` flags measure one contender in a fresh interpreter
BENCH_SCRIPT = os.path.join(HERE, "bench.py")
BENCH_DP_SCRIPT = os.path.join(HERE, "bench_dp.py")


#: key -> (comparison, target, True when lower is better)
TARGETS = {
    "kd_vs_trl": (0.65, True),  # issue "fast by default": KD step <= 0.65x GKD's with the default config
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


def demo_batch(tokenizer, batch: int, seq: int, device) -> dict:
    """``batch`` rows of ``seq`` tokens of the builtin demo corpus, collated by our collator."""
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
    """:func:`time_round_robin` with one batch for every contender (in the form each one reads)."""
    return time_round_robin(trainers, {n: inputs_for(n, batch) for n in trainers}, steps, repeat, warmup)


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
                        student_layers: int = 6, extra: dict | None = None):
    """One GPT-2-shape contender (see :data:`REAL_CONTENDERS`): a 6-layer student copied from the teacher.

    ``kd``/``crr``/``dp_*``/``kd_plain`` use the shipped recipe's loss (``kd_plain`` with ``loss_chunk_size: off``,
    the unfused loss on full logits); ``kd_matched`` GKD's loss, against ``trl_gkd``.
    """
    from transformers import AutoModelForCausalLM

    if teacher is None or name == "trl_gkd":  # TRL's own, as it loads it: ours fuse a shared teacher's GELU in place
        teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    if name == "trl_gkd":  # the student and tokenizer our trainers get, built the same way
        from distill.distillation.config import DistillationConfig
        from distill.distillation.models import build_models

        config = DistillationConfig(output_dir=os.path.join(workdir, name), teacher_model_name_or_path=teacher_dir,
                                    student_num_layers=student_layers, report_to="none")
        _, student, tokenizer = build_models(config, teacher=teacher)
        return make_gkd_trainer(student, teacher_dir, tokenizer, batch, workdir, teacher=teacher, bf16=bf16)
    mode = {"dp_fast": "fast", "dp_ghost": "ghost"}.get(name, "non-dp")
    extra = dict(MATCHED if name == "kd_matched" else RECIPE, student_num_layers=student_layers, bf16=bf16,
                 **(extra or {}))
    if name == "crr":
        extra["perturbation"] = "mean"
    if name == "kd_plain":
        extra["loss_chunk_size"] = "off"
    trainer = make_trainer(mode, teacher_dir, batch, os.path.join(workdir, name), teacher_model=teacher, **extra)
    trainer.model.train()
    return trainer


def real_memory_child(name: str, teacher_dir: str, batch: int, seq: int, steps: int, bf16: bool,
                      student_layers: int = 6, extra: dict | None = None, rlimit_gb: float | None = None) -> dict:
    """In a fresh process: the peak memory of ``name``'s training steps (see :func:`peak_memory`) and the analytic
    floor of its run (:func:`memory_floor_mb`). ``extra``: further config keys (ours only); ``rlimit_gb``: cap the
    process's address space (``RLIMIT_AS``), so that a contender that does not fit fails with ``{"oom": true}``
    instead of taking the machine's memory."""
    if rlimit_gb and not torch.cuda.is_available():  # (CUDA maps a large address space: its OOM is an error)
        import resource

        cap = int(rlimit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if name == "trl_gkd":
        gkd_classes()  # TRL's imports before the baseline, like opacus'
    floor = {}

    def build(work):
        trainer = make_real_contender(name, teacher_dir, batch, work, bf16=bf16, student_layers=student_layers,
                                      extra=extra)
        floor["floor_mb"] = memory_floor_mb(trainer)
        batch_ = demo_batch(trainer.processing_class, batch, seq, trainer.args.device)
        return trainer, inputs_for(name, batch_)

    try:
        result = peak_memory(build, steps)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if rlimit_gb and ("alloc" in str(e).lower() or "out of memory" in str(e).lower()
                          or isinstance(e, MemoryError)):
            return {"contender": name, "oom": True, "rlimit_gb": rlimit_gb, "batch": batch, "seq": seq}
        raise
    return {"contender": name, "batch": batch, "seq": seq, **floor, **result}


def memory_floor_mb(trainer) -> float:
    """The analytic floor of a training step's memory, in MB: the trainable student's weights + gradients +
    optimizer state (AdamW: two moments, float32) and the frozen student weights, plus the teacher's weights, each
    in its run's dtype. Activations, the loss and allocator caching come on top."""
    student = trainer.model
    teacher = next((t for t in (getattr(trainer, k, None) for k in ("teacher", "teacher_model", "ref_model"))
                    if isinstance(t, torch.nn.Module)), None)
    total = 0
    for p in student.parameters():
        size = p.numel() * p.element_size()
        total += size + (size + 2 * p.numel() * 4 if p.requires_grad else 0)
    if teacher is not None:
        total += sum(p.numel() * p.element_size() for p in teacher.parameters())
    return total / 2**20


#: run :func:`measure_real_memory`'s uncapped runs in this process (tests: a fresh interpreter costs ~12 s on a slow
#: machine); a capped run (``rlimit_gb``) always starts its own process, since the cap must not apply to this one
MEMORY_IN_PROCESS = False


def measure_real_memory(name: str, a, teacher_dir: str, batch: int | None = None, seq: int | None = None,
                        extra: dict | None = None, rlimit_gb: float | None = None) -> dict:
    """:func:`real_memory_child` in a fresh interpreter (in this one under :data:`MEMORY_IN_PROCESS` when uncapped),
    at ``batch x seq`` (default ``a.gpu_batch x a.gpu_seq``)."""
    batch, seq = batch or a.gpu_batch, seq or a.gpu_seq
    if MEMORY_IN_PROCESS and not rlimit_gb:
        return real_memory_child(name, teacher_dir, batch, seq, a.real_memory_steps, a.bf16, a.real_student_layers,
                                 extra)
    import subprocess

    cmd = [sys.executable, BENCH_SCRIPT, "--_real-memory-child", name, "--_teacher", teacher_dir,
           "--gpu-batch", str(batch), "--gpu-seq", str(seq), "--real-memory-steps", str(a.real_memory_steps),
           "--real-student-layers", str(a.real_student_layers)] + (["--bf16"] if a.bf16 else [])
    if extra:
        cmd += ["--_extra", json.dumps(extra)]
    if rlimit_gb:
        cmd += ["--_rlimit-gb", str(rlimit_gb)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        if rlimit_gb and (out.returncode < 0 or "alloc" in out.stderr.lower() or "MemoryError" in out.stderr):
            return {"contender": name, "oom": True, "rlimit_gb": rlimit_gb, "batch": batch, "seq": seq}
        raise RuntimeError(f"memory run for {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: the shipped recipe (configs/gpt2-to-distilgpt2.yaml) at one device's shape: 8 rows x 1024 tokens
RECIPE_SHAPE = (8, 1024)
#: its settings that shape a step's memory beyond the loss (float32 here; the recipe's bf16 is a GPU setting)
RECIPE_STEP = dict(learning_rate=5.0e-4, weight_decay=0.01, max_grad_norm=5.0)
#: address-space cap of a TRL run that may not fit (GB), at most: see :func:`trl_rlimit_gb`
TRL_RLIMIT_GB = 18.0


def trl_rlimit_gb() -> float:
    """:data:`TRL_RLIMIT_GB`, or less on a machine with less memory available now (``MemAvailable`` − 1 GB), so
    that the capped run fails inside its own process rather than pushing the machine into its OOM killer."""
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:")) / 2**20
    except (OSError, StopIteration):
        return TRL_RLIMIT_GB
    return round(max(4.0, min(TRL_RLIMIT_GB, avail - 1.0)), 1)


def loss_path(a) -> dict:
    """Config keys that ``--loss-chunk-size`` and ``--compile-loss`` set on our GPT-2-shape contenders (none: the
    config's ``auto``, eager)."""
    size = getattr(a, "loss_chunk_size", None)
    return {**({"loss_chunk_size": int(size)} if size else {}),
            **({"compile_loss": True} if getattr(a, "compile_loss", False) else {})}


def recipe_memory(a, teacher_dir: str, with_trl: bool, batch: int = RECIPE_SHAPE[0], seq: int = RECIPE_SHAPE[1]
                  ) -> dict:
    """KD at the recipe's shape with its settings, as configured and with ``gradient_checkpointing: true``, and
    TRL's GKD at the same shape under an address-space cap (its peak, or ``"oom"``): one fresh process each."""
    out = {"recipe_shape": [batch, seq]}
    step = {**RECIPE_STEP, **loss_path(a)}
    for key, extra in (("recipe_peak_mb", step), ("recipe_peak_mb_checkpointing", {**step, "gradient_checkpointing": True})):
        log(f"  recipe memory: kd {batch} x {seq}{' + gradient checkpointing' if 'gradient_checkpointing' in extra else ''}")
        r = measure_real_memory("kd", a, teacher_dir, batch, seq, extra=extra)
        out[key] = r["train_peak_mb"]
        out[key.replace("peak_mb", "memory")] = r
    out["recipe_floor_mb"] = out["recipe_memory"]["floor_mb"]
    if with_trl:
        cap = trl_rlimit_gb()
        log(f"  recipe memory: trl_gkd {batch} x {seq} (address space capped at {cap:g} GB)")
        r = measure_real_memory("trl_gkd", a, teacher_dir, batch, seq, rlimit_gb=cap)
        out["recipe_trl_peak_mb"] = "oom" if r.get("oom") else r["train_peak_mb"]
        out["recipe_trl_memory"] = r
    else:
        out["recipe_trl_peak_mb"] = None
    return out


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
    mem_batch, mem_seq = getattr(a, "mem_batch", None) or a.gpu_batch, getattr(a, "mem_seq", None) or a.gpu_seq
    memory = {}
    for name in names:
        log(f"  peak memory: {name} at {mem_batch} x {mem_seq} (fresh process)")
        memory[name] = measure_real_memory(name, a, teacher_dir, mem_batch, mem_seq, extra=loss_path(a) or None,
                                           rlimit_gb=trl_rlimit_gb() if name == "trl_gkd" else None)
    recipe = {}
    if getattr(a, "recipe_memory", False):
        rows, length = (int(x) for x in (getattr(a, "recipe_shape", None) or "x".join(map(str, RECIPE_SHAPE))).split("x"))
        recipe = recipe_memory(a, teacher_dir, with_trl, rows, length)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    trainers = {}
    for name in names:
        trainers[name] = make_real_contender(name, teacher_dir, a.gpu_batch, workdir, teacher=teacher, bf16=a.bf16,
                                             student_layers=a.real_student_layers, extra=loss_path(a))
    first = trainers[names[0]]
    batch = demo_batch(first.processing_class, a.gpu_batch, a.gpu_seq, first.args.device)
    log(f"  step times: {a.real_repeat} rounds x {a.real_steps} steps per contender, round-robin")
    timings = time_contenders(trainers, batch, a.real_steps, a.real_repeat, a.real_warmup)
    med = {n: timings.median(n) for n in trainers}
    peak = {n: ("oom" if m.get("oom") else m["train_peak_mb"]) for n, m in memory.items()}
    tokens = a.gpu_batch * a.gpu_seq

    def ratio(x, y, table=None):
        if x not in trainers or y not in trainers:
            return None
        if table is not None:  # a peer that ran out of memory: we fit in less than its cap
            if table[y] == "oom":
                return table[x] / (memory[y]["rlimit_gb"] * 1024) if table[x] != "oom" else None
            return None if table[x] == "oom" else table[x] / table[y]
        return timings.ratio(x, y)

    floor = next((m["floor_mb"] for n, m in memory.items() if n in ("kd", "kd_matched") and "floor_mb" in m), None)
    kd_peak = peak.get("kd", peak.get("kd_matched"))
    return {"batch": a.gpu_batch, "seq": a.gpu_seq, "bf16": a.bf16, "memory_shape": [mem_batch, mem_seq],
            "loss_chunk_size": loss_path(a).get("loss_chunk_size", "auto"),
            "compile_loss": loss_path(a).get("compile_loss", False),
            "floor_mb": floor, "kd_peak_vs_floor": kd_peak / floor if floor and isinstance(kd_peak, float) else None,
            "recipe_peak_mb": recipe.get("recipe_peak_mb"),
            "recipe_peak_mb_checkpointing": recipe.get("recipe_peak_mb_checkpointing"),
            "recipe_trl_peak_mb": recipe.get("recipe_trl_peak_mb"), "recipe": recipe or None,
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
REAL_TARGETS = {"kd_mem_vs_trl": 0.5, "kd_vs_trl": 0.9, "crr_vs_kd": 1.3, "dp_vs_nondp": 1.3, "dp_mem_vs_nondp": 1.2,
                "cached_kd_vs_kd": 0.7, "recipe_peak_mb_checkpointing": 6000}


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
    lines = [f"{'comparison':28s} {'value':>9s} {'target':>8s}  met", "-" * 53]
    for key, v in targets.items():
        value = "n/a" if v["value"] is None else (f"{v['value']:,.0f} MB" if "_mb" in key else f"{v['value']:.2f}x")
        met = "-" if v["met"] is None else ("yes" if v["met"] else "NO")
        lines.append(f"{key:28s} {value:>9s} {v['target']:>8s}  {met}")
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
        shape = "x".join(map(str, r.get("memory_shape") or [r["batch"], r["seq"]]))
        lines.append(f"peak training memory at {shape} (MB): " + ", ".join(
            f"{n} {v:,.0f}" if isinstance(v, float) else f"{n} {v}" for n, v in r["peak_mb"].items()))
        if r.get("floor_mb"):
            lines.append(f"analytic floor (weights + gradients + AdamW state + teacher): {r['floor_mb']:,.0f} MB; "
                         f"KD peak / floor {r['kd_peak_vs_floor'] or float('nan'):.2f}x")
        if r.get("recipe"):
            trl = r["recipe_trl_peak_mb"]
            lines.append(f"recipe shape {'x'.join(map(str, r['recipe']['recipe_shape']))}: KD {r['recipe_peak_mb']:,.0f} MB, "
                         f"with gradient checkpointing {r['recipe_peak_mb_checkpointing']:,.0f} MB, TRL GKD "
                         f"{trl if not isinstance(trl, float) else f'{trl:,.0f} MB'}")
        lines.append("median step time (s): " + ", ".join(f"{n} {v:.2f}" for n, v in r["step_seconds"].items()))
        lines.append("tokens/s: " + ", ".join(f"{n} {v:,.0f}" for n, v in r["tokens_per_second"].items()))
    if result.get("notes"):
        lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


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
    cmd = [sys.executable, BENCH_DP_SCRIPT, "--_memory-child", mode, "--_teacher", teacher,
           "--batch", str(batch), "--seq", str(seq), "--steps", str(steps), "--_extra", json.dumps(extra or {})]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_rows(tok, texts, n, seq_len):
    """``n`` rows of exactly ``seq_len`` tokens, each from consecutive ``texts``."""
    rows, cur, i = [], [], 0
    while len(rows) < n:
        cur += tok(" " + texts[i % len(texts)])["input_ids"]
        i += 1
        if len(cur) >= seq_len:
            rows.append(cur[:seq_len])
            cur = []
    return rows


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


#: the recipe's loss without the hidden-state term (which a cache cannot serve)
CACHE_RECIPE = dict(temperature=2.0, alpha_kd=5.0, alpha_lm=2.0, alpha_cos=0.0, optim="adamw_torch", learning_rate=1e-4)


def cache_trainer(teacher_dir: str, workdir: str, name: str, dataset, student_layers: int = 2, **extra):
    from transformers.utils import logging as hf_logging

    from distill.distillation.config import DistillationConfig
    from distill.distillation.trainer import DistillationTrainer

    hf_logging.set_verbosity_error()
    args = DistillationConfig(output_dir=os.path.join(workdir, name), teacher_model_name_or_path=teacher_dir,
                              student_num_layers=student_layers, per_device_train_batch_size=len(dataset),
                              use_cpu=not torch.cuda.is_available(), report_to="none", seed=0, disable_tqdm=True,
                              **{**CACHE_RECIPE, **extra})
    trainer = DistillationTrainer(args=args, train_dataset=dataset)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def cache_contenders(teacher_dir: str, workdir: str, batch: int, seq: int, top_k: int, student_layers: int = 2,
                     common: dict | None = None) -> tuple[dict, dict, dict]:
    """``(trainers, batches, info)``: online KD and the cached KD / CRR trainers, each with its own batch (the
    cached ones carry the ``cache_row`` column), and the caches' size. ``common``: config keys for all of them."""
    common = common or {}
    from datasets import Dataset

    from distill.builtin.corpus import CorpusSpec, generate_corpus
    from distill.model_loading import load_tokenizer
    from distill.distillation.teacher_cache import build_teacher_cache

    tok = load_tokenizer(teacher_dir)
    rows = make_rows(tok, generate_corpus(CorpusSpec(num_documents=max(64, 8 * batch), seed=1)), batch, seq)
    dataset = Dataset.from_dict({"input_ids": rows})
    trainers = {"kd": cache_trainer(teacher_dir, workdir, "kd", dataset, student_layers, **common)}
    info = {}
    for name, extra in (("cached_kd", {}), ("cached_crr", {"perturbation": "mean"})):
        online = trainers["kd"] if not extra else cache_trainer(teacher_dir, workdir, name + "-online", dataset,
                                                           student_layers, **common, **extra)
        cache = os.path.join(workdir, name + "-cache")
        manifest = build_teacher_cache(online, cache, top_k=top_k, progress=False)
        info[name] = {"bytes_per_token": manifest.bytes_per_token, "top_k": manifest.top_k}
        trainers[name] = cache_trainer(teacher_dir, workdir, name, dataset, student_layers, teacher_cache=cache,
                                       **common, **extra)
    state = trainers["kd"].model.state_dict()
    batches = {}
    for name, t in trainers.items():
        t.model.load_state_dict(state)
        t.model.train()
        collated = t.data_collator([t.train_dataset[i] for i in range(len(t.train_dataset))])
        batches[name] = t._prepare_inputs(collated)
    return trainers, batches, info


def time_round_robin(trainers: dict, batches: dict, steps: int, repeat: int, warmup: int) -> Timings:
    """Round-robin: each round runs ``steps`` steps of every contender on its batch, the order reversed every
    other round (:func:`time_steps` of :func:`timed_step`)."""
    return time_steps({n: (lambda n=n: timed_step(trainers[n], batches[n])) for n in trainers}, steps, repeat, warmup)


def time_steps(steps_by_name: dict, steps: int, repeat: int, warmup: int) -> Timings:
    """Round-robin over ``steps_by_name`` (name -> a function that runs one step and returns its seconds):
    ``warmup`` steps of each first, then ``repeat`` rounds of ``steps`` steps of each, the order reversed every other
    round."""
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    rounds = []
    for i in range(repeat):
        order = list(steps_by_name) if i % 2 == 0 else list(reversed(steps_by_name))
        rounds.append({n: [steps_by_name[n]() for _ in range(steps)] for n in order})
    return Timings(rounds)


def bench_cache(teacher_dir: str, workdir: str, *, batch: int = 8, seq: int = 64, top_k: int = 64, steps: int = 3,
                repeat: int = 8, warmup: int = 2, student_layers: int = 2, bf16: bool = False) -> dict:
    """The cache comparisons for one teacher: ratios, median step seconds and bytes per token."""
    trainers, batches, info = cache_contenders(teacher_dir, workdir, batch, seq, top_k, student_layers,
                                               {"bf16": True} if bf16 else None)
    timings = time_round_robin(trainers, batches, steps, repeat, warmup)
    return {"cached_kd_vs_kd": timings.ratio("cached_kd", "kd"),
            "cached_crr_vs_cached_kd": timings.ratio("cached_crr", "cached_kd"),
            "cache_bytes_per_token": info["cached_kd"]["bytes_per_token"], "cache_top_k": info["cached_kd"]["top_k"],
            "cache_step_seconds": {n: timings.median(n) for n in trainers}}


def bench_cache_real_shapes(workdir: str, *, batch: int, seq: int, top_k: int = 64, steps: int = 3, repeat: int = 4,
                            warmup: int = 1, teacher_layers: int = 12, width: int = 768, student_layers: int = 6,
                            bf16: bool = False) -> dict:
    """``cached_kd_vs_kd`` for GPT-2 (12 x 768, 50257) -> 6 layers at ``batch x seq``, random weights
    (``teacher_layers``/``width``/``student_layers``: smaller models for smoke tests)."""
    teacher_dir = save_gpt2_shape_teacher(os.path.join(workdir, "gpt2-shape-cache"), teacher_layers, width)
    r = bench_cache(teacher_dir, workdir, batch=batch, seq=seq, top_k=top_k, steps=steps, repeat=repeat,
                    warmup=warmup, student_layers=student_layers, bf16=bf16)
    return {"batch": batch, "seq": seq, **r}
