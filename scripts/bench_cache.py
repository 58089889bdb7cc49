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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

#: the recipe's loss without the hidden-state term (which a cache cannot serve)
CACHE_RECIPE = dict(temperature=2.0, alpha_kd=5.0, alpha_lm=2.0, alpha_cos=0.0, optim="adamw_torch", learning_rate=1e-4)
TARGETS = {"cached_kd_vs_kd": (0.75, True), "cached_crr_vs_cached_kd": (1.05, True)}


def _trainer(teacher_dir: str, workdir: str, name: str, dataset, student_layers: int = 2, **extra):
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


def cache_contenders(teacher_dir: str, workdir: str, batch: int, seq: int, top_k: int, student_layers: int = 2
                     ) -> tuple[dict, dict, dict]:
    """``(trainers, batches, info)``: online KD and the cached KD / CRR trainers, each with its own batch (the
    cached ones carry the ``cache_row`` column), and the caches' size."""
    from bench_crr import make_rows
    from datasets import Dataset

    from distill.builtin.corpus import CorpusSpec, generate_corpus
    from distill.model_loading import load_tokenizer
    from distill.distillation.teacher_cache import build_teacher_cache

    tok = load_tokenizer(teacher_dir)
    rows = make_rows(tok, generate_corpus(CorpusSpec(num_documents=max(64, 8 * batch), seed=1)), batch, seq)
    dataset = Dataset.from_dict({"input_ids": rows})
    trainers = {"kd": _trainer(teacher_dir, workdir, "kd", dataset, student_layers)}
    info = {}
    for name, extra in (("cached_kd", {}), ("cached_crr", {"perturbation": "mean"})):
        online = trainers["kd"] if not extra else _trainer(teacher_dir, workdir, name + "-online", dataset,
                                                           student_layers, **extra)
        cache = os.path.join(workdir, name + "-cache")
        manifest = build_teacher_cache(online, cache, top_k=top_k, progress=False)
        info[name] = {"bytes_per_token": manifest.bytes_per_token, "top_k": manifest.top_k}
        trainers[name] = _trainer(teacher_dir, workdir, name, dataset, student_layers, teacher_cache=cache, **extra)
    state = trainers["kd"].model.state_dict()
    batches = {}
    for name, t in trainers.items():
        t.model.load_state_dict(state)
        t.model.train()
        collated = t.data_collator([t.train_dataset[i] for i in range(len(t.train_dataset))])
        batches[name] = t._prepare_inputs(collated)
    return trainers, batches, info


def time_round_robin(trainers: dict, batches: dict, steps: int, repeat: int, warmup: int):
    from bench import Timings, timed_step

    for name, t in trainers.items():
        for _ in range(warmup):
            timed_step(t, batches[name])
    rounds = []
    for i in range(repeat):
        order = list(trainers) if i % 2 == 0 else list(reversed(trainers))
        rounds.append({n: [timed_step(trainers[n], batches[n]) for _ in range(steps)] for n in order})
    return Timings(rounds)


def bench_cache(teacher_dir: str, workdir: str, *, batch: int = 8, seq: int = 64, top_k: int = 64, steps: int = 3,
                repeat: int = 8, warmup: int = 2, student_layers: int = 2) -> dict:
    """The cache comparisons for one teacher: ratios, median step seconds and bytes per token."""
    trainers, batches, info = cache_contenders(teacher_dir, workdir, batch, seq, top_k, student_layers)
    timings = time_round_robin(trainers, batches, steps, repeat, warmup)
    return {"cached_kd_vs_kd": timings.ratio("cached_kd", "kd"),
            "cached_crr_vs_cached_kd": timings.ratio("cached_crr", "cached_kd"),
            "cache_bytes_per_token": info["cached_kd"]["bytes_per_token"], "cache_top_k": info["cached_kd"]["top_k"],
            "cache_step_seconds": {n: timings.median(n) for n in trainers}}


def bench_cache_real_shapes(workdir: str, *, batch: int, seq: int, top_k: int = 64, steps: int = 3, repeat: int = 4,
                            warmup: int = 1) -> dict:
    """``cached_kd_vs_kd`` for GPT-2 (12 x 768, 50257) -> 6 layers at ``batch x seq``, random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.builtin.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    teacher_dir = os.path.join(workdir, "gpt2-shape-cache")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.eos_token_id)).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    r = bench_cache(teacher_dir, workdir, batch=batch, seq=seq, top_k=top_k, steps=steps, repeat=repeat,
                    warmup=warmup, student_layers=6)
    return {"batch": batch, "seq": seq, **r}


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
    from bench import environment
    from bench_dp import make_teacher

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
