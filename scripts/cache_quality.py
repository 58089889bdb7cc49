"""Does a CRR student trained from a top-k teacher cache match the online CRR student? (the demo's setting)

Trains, on the offline demo corpus and with the demo's teacher and budget (``distill.demo.pipeline``):

* ``kd``          plain KD, online (the bias reference),
* ``crr``         CRR (two-sided CDA + ``mean`` perturbation), online teacher,
* ``crr_cached``  the same CRR config trained from a ``distill cache-teacher`` cache of top-``--top-k``
                  (+ tail) targets, built once over the CRR training rows,

and reports each student's held-out perplexity and co-occurrence bias (|log p(female) − log p(male)| after
held-out neutral prompts, averaged over the 16 occupations), plus the cache size and build time.

    python scripts/cache_quality.py [--out runs/cache-quality] [--top-k 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/cache-quality")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="the demo's --quick sizes")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from distill.builtin.corpus import CorpusSpec, generate_corpus
    from distill.demo.pipeline import (DEMO_OCCUPATIONS, DemoSpec, demo_tokenizer, heldout_perplexity,
                                       student_config)
    from distill.fairness.evaluator import evaluate_disparity
    from distill.fairness.prompts import NEUTRAL_TEMPLATES, builtin_prompts
    from distill.model_loading import load_causal_lm
    from distill.outputs import CACHE_QUALITY_FILENAME
    from distill.runtime import tune_cpu_allocator
    from distill.distillation.teacher_cache import build_teacher_cache
    from distill.builtin.tiny_models import train_tiny_teacher
    from distill.distillation.train import build_trainer, run_training

    tune_cpu_allocator()
    hf_logging.set_verbosity_error()
    spec = DemoSpec.quick(a.seed) if a.quick else DemoSpec(seed=a.seed)
    corpus = dict(skew=spec.skew, occupations=DEMO_OCCUPATIONS, holdout_prompts=NEUTRAL_TEMPLATES)
    texts = generate_corpus(CorpusSpec(num_documents=spec.num_documents, seed=a.seed, **corpus))
    heldout = generate_corpus(CorpusSpec(num_documents=spec.heldout_documents, seed=a.seed + 1000, **corpus))
    tokenizer = demo_tokenizer(texts + heldout)
    os.makedirs(a.out, exist_ok=True)
    teacher_dir = os.path.join(a.out, "teacher")
    if not os.path.isfile(os.path.join(teacher_dir, "model.safetensors")):
        print("training the demo teacher", file=sys.stderr, flush=True)
        train_tiny_teacher(teacher_dir, spec.teacher, texts=texts, tokenizer=tokenizer)

    result: dict = {"top_k": a.top_k, "quick": a.quick, "students": {}}
    seconds: dict[str, float] = {}
    for variant in ("kd", "crr", "crr_cached"):
        out = os.path.join(a.out, variant)
        args = student_config(spec, out, teacher_dir, "crr" if variant == "crr_cached" else variant)
        args.overwrite_output_dir = True
        args.disable_tqdm = True
        if variant == "crr_cached":
            cache = os.path.join(a.out, f"cache-k{a.top_k}")
            t0 = time.perf_counter()
            manifest = build_teacher_cache(build_trainer(args, texts=texts), cache, top_k=a.top_k, progress=False)
            result["cache"] = {"rows": manifest.num_rows, "tokens": manifest.num_tokens,
                               "bytes_per_token": manifest.bytes_per_token, "vocab_size": manifest.vocab_size,
                               "build_seconds": round(time.perf_counter() - t0, 1)}
            args.teacher_cache = cache
        print(f"training {variant}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        run_training(args, texts=texts)
        seconds[variant] = round(time.perf_counter() - t0, 1)
        model = load_causal_lm(out)
        fair = evaluate_disparity(model, tokenizer, builtin_prompts(list(DEMO_OCCUPATIONS)), metrics=("cooccurrence",),
                                  model_name=f"cache-quality/{variant}", progress=False)
        result["students"][variant] = {"perplexity": heldout_perplexity(model, tokenizer, heldout),
                                       "cooccurrence_bias_mean_abs": fair.get("cooccurrence_bias_mean_abs"),
                                       "train_seconds": seconds[variant]}
    s = result["students"]
    result["perplexity_cached_vs_online"] = s["crr_cached"]["perplexity"] / s["crr"]["perplexity"]
    result["bias_cached_vs_kd"] = s["crr_cached"]["cooccurrence_bias_mean_abs"] / s["kd"]["cooccurrence_bias_mean_abs"]
    result["bias_online_vs_kd"] = s["crr"]["cooccurrence_bias_mean_abs"] / s["kd"]["cooccurrence_bias_mean_abs"]
    result["targets"] = {"perplexity_within_2pct": abs(result["perplexity_cached_vs_online"] - 1) <= 0.02}
    with open(os.path.join(a.out, CACHE_QUALITY_FILENAME), "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
