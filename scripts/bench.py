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
With a GPU the script also reports absolute tokens/s for GPT-2 (12 x 768) -> 6-layer student at real shapes
(random weights); ``--real-shapes`` forces that part on CPU.

    pip install -e ".[bench]"          # TRL, for the kd_vs_trl comparison (skipped when missing)
    python scripts/bench.py [--json] [--steps 5] [--repeat 4] [--threads N]
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
def make_gkd_trainer(student, teacher_dir: str, tokenizer, batch: int, workdir: str):
    """TRL's GKDTrainer, off-policy (lmbda=0, beta=0), configured like our trainers."""
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
                     per_device_train_batch_size=batch, bf16=False, fp16=False, disable_dropout=False,
                     use_cpu=not cuda, report_to="none", seed=0, disable_tqdm=True, **no_checkpointing)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
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

    from distill.data import DistillationCollator
    from distill.demo.corpus import CorpusSpec, generate_corpus

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
    from distill.losses import kd_loss, teacher_log_probs

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


def bench_real_shapes(a, workdir: str, with_trl: bool) -> dict:
    """Absolute tokens/s for GPT-2 (12 x 768, 50257) -> 6-layer student at real shapes, random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    teacher_dir = os.path.join(workdir, "gpt2-shape")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.eos_token_id)).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    from bench_dp import make_trainer

    trainers = {"kd": make_trainer("non-dp", teacher_dir, a.gpu_batch, workdir, student_num_layers=6, **RECIPE)}
    trainers["crr"] = make_trainer("non-dp", teacher_dir, a.gpu_batch, workdir + "/crr", student_num_layers=6,
                                   perturbation="mean", **RECIPE)
    trainers["dp_fast"] = make_trainer("fast", teacher_dir, a.gpu_batch, workdir, student_num_layers=6, **RECIPE)
    if with_trl:
        trainers["kd_matched"] = make_trainer("non-dp", teacher_dir, a.gpu_batch, workdir + "/matched",
                                              student_num_layers=6, **MATCHED)
        trainers["trl_gkd"] = make_gkd_trainer(copy.deepcopy(trainers["kd"].model), teacher_dir, tok, a.gpu_batch,
                                               workdir)
    for t in trainers.values():
        t.model.train()
    batch = demo_batch(tok, a.gpu_batch, a.gpu_seq, trainers["kd"].args.device)
    timings = time_contenders(trainers, batch, a.steps, a.repeat, a.warmup)
    med = {n: timings.median(n) for n in trainers}
    tokens = a.gpu_batch * a.gpu_seq
    return {"batch": a.gpu_batch, "seq": a.gpu_seq, "tokens_per_second": {n: tokens / s for n, s in med.items()},
            "step_seconds": med}


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


def verdicts(result: dict) -> dict:
    out = {}
    for key, (target, lower) in TARGETS.items():
        value = result.get(key)
        met = None if value is None else (value <= target if lower else value >= target)
        out[key] = {"value": value, "target": f"{'<=' if lower else '>='} {target}", "met": met}
    return out


def format_table(result: dict) -> str:
    lines = [f"{'comparison':24s} {'ratio':>8s} {'target':>8s}  met", "-" * 48]
    for key, v in result["targets"].items():
        value = "n/a" if v["value"] is None else f"{v['value']:.2f}x"
        met = "-" if v["met"] is None else ("yes" if v["met"] else "NO")
        lines.append(f"{key:24s} {value:>8s} {v['target']:>8s}  {met}")
    for key in ("opacus_hooks_vs_nondp", "opacus_ghost_vs_nondp", "dp_vs_nondp_frozen"):
        if result.get(key) is not None:
            lines.append(f"{key:24s} {result[key]:7.2f}x {'(info)':>8s}")
    if result.get("memory_mb"):
        m = result["memory_mb"]
        lines.append(f"training memory (peak above the post-import baseline): non-DP {m['non-dp']['train_peak_mb']:.0f} "
                     f"MB, DP fast {m['dp_fast']['train_peak_mb']:.0f} MB")
    lines.append("median step time (s): " + ", ".join(f"{n} {s:.4f}" for n, s in result["step_seconds"].items()))
    if result.get("loss_parity_abs_diff") is not None:
        lines.append(f"our KD loss vs GKD's loss on the batch: |diff| = {result['loss_parity_abs_diff']:.2e}")
    if result.get("real_shapes"):
        r = result["real_shapes"]
        lines.append(f"GPT-2 -> 6 layers, batch {r['batch']} x {r['seq']}: tokens/s " +
                     ", ".join(f"{n} {v:,.0f}" for n, v in r["tokens_per_second"].items()))
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
    ap.add_argument("--real-shapes", action="store_true", help="also time GPT-2 shapes on CPU (default: GPU only)")
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-seq", type=int, default=512)
    a = ap.parse_args(argv)
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
        teacher = make_teacher(os.path.join(work, "teacher"))
        log(f"[1/4] step times: {a.repeat} rounds x {a.steps} steps per contender, batch {a.batch} x {a.seq}")
        result.update(bench_steps(a, teacher, work, with_trl))
        from bench_cache import bench_cache, bench_cache_real_shapes  # training from a teacher cache

        result.update(bench_cache(teacher, work, batch=a.batch, seq=a.seq, steps=a.steps, repeat=a.repeat,
                                  warmup=a.warmup))
        if not a.no_memory:
            log("[2/4] peak memory, DP vs non-DP (fresh process each)")
            result.update(bench_memory(a, teacher))
        log(f"[3/4] fairness-evaluation generation: {a.eval_prompts} prompts x {a.eval_new_tokens} tokens")
        result.update(bench_eval(a))
        if torch.cuda.is_available() or a.real_shapes:
            log(f"[4/4] GPT-2 -> 6-layer student at real shapes, batch {a.gpu_batch} x {a.gpu_seq}")
            result["real_shapes"] = bench_real_shapes(a, work, with_trl)
            result["real_shapes"]["cached_kd_vs_kd"] = bench_cache_real_shapes(
                work, batch=a.gpu_batch, seq=a.gpu_seq, steps=a.steps, repeat=a.repeat, warmup=a.warmup)["cached_kd_vs_kd"]
        else:
            result["real_shapes"] = None
            result["notes"].append("no GPU: absolute GPT-2-shape throughput not measured (--real-shapes forces it)")
    result["targets"] = verdicts(result)
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
