"""Cost of a counterfactual-role-reversal (CRR) training step against a plain KD step.

Same batch, same tiny GPT-2 teacher (4x64, real 50257-token vocabulary), the same 2-layer student and the loss
of the shipped recipe (T = 2, alpha_kd 5, alpha_lm 2, alpha_cos 1). The CRR step uses ``perturbation: mean``
(token-level x̃, one batched teacher forward over x and the rows of x̃ that differ). A step is the student
forward + teacher targets + loss + backward. Warm-up steps are dropped; plain and CRR steps are interleaved
(alternating order) and the median of each is reported, for batches with 0 %, 50 % and 100 % of rows holding
a gendered token, and for the share found in 64-token blocks of the builtin demo corpus (also the median of
the ratios of adjacent plain/CRR pairs, which is robust to a machine whose load drifts). CDA (two-sided)
preprocessing cost per 1000 records is reported too.

    python scripts/bench_crr.py [--batch-size 16] [--seq-len 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

from distill.runtime import tune_cpu_allocator

tune_cpu_allocator()

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from distill.distillation.config import DistillationConfig  # noqa: E402
from distill.counterfactual.cda import apply_cda  # noqa: E402
from distill.counterfactual.lexicon import load_lexicon  # noqa: E402
from distill.counterfactual.swap import GenderSwapper  # noqa: E402
from distill.text_data import DistillationCollator  # noqa: E402
from distill.builtin.corpus import FILLER, CorpusSpec, generate_corpus  # noqa: E402
from distill.model_loading import gpt2_tokenizer  # noqa: E402
from distill.distillation.student import build_student  # noqa: E402
from distill.distillation.trainer import DistillationTrainer  # noqa: E402


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


def step(trainer, batch):
    model = trainer.model
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    model.zero_grad(set_to_none=True)


def time_pair(plain, crr, batch, warmup, repeats):
    for _ in range(warmup):
        step(plain, batch)
        step(crr, batch)
    times = {"plain": [], "crr": []}
    for r in range(repeats):
        order = [("plain", plain), ("crr", crr)] if r % 2 == 0 else [("crr", crr), ("plain", plain)]
        for name, trainer in order:
            t0 = time.perf_counter()
            step(trainer, batch)
            times[name].append(time.perf_counter() - t0)
    ratios = [c / p for c, p in zip(times["crr"], times["plain"])]  # adjacent pairs: robust to load drift
    return statistics.median(times["plain"]), statistics.median(times["crr"]), statistics.median(ratios)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    a = parser.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=4, n_head=4,
                                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    teacher.eval()
    student = build_student(teacher, num_layers=2)
    out = tempfile.mkdtemp()
    # the loss of the shipped GPT-2 -> DistilGPT-2 recipe (configs/gpt2-to-distilgpt2-crr.yaml)
    common = dict(output_dir=out, use_cpu=True, report_to="none", temperature=2.0, alpha_kd=5.0, alpha_lm=2.0,
                  alpha_cos=1.0, per_device_train_batch_size=a.batch_size)
    plain = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, processing_class=tok,
                                args=DistillationConfig(**common, perturbation="none"))
    crr = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, processing_class=tok,
                              args=DistillationConfig(**common, perturbation="mean"))
    plain.model.train()
    crr.model.train()

    swapper = GenderSwapper(load_lexicon())
    corpus = generate_corpus(CorpusSpec(num_documents=4000, seed=1))
    gendered_texts = [t for t in corpus if swapper.is_gendered(t)]
    neutral_texts = [f.format(city="Paris") for f in FILLER]
    collate = DistillationCollator(tok.pad_token_id)

    demo_rows = make_rows(tok, corpus, 256, a.seq_len)
    demo_batch = collate([{"input_ids": r} for r in demo_rows])
    demo_share = float((crr.token_swapper.swap_tokens(demo_batch["input_ids"]) != demo_batch["input_ids"])
                       .any(-1).float().mean())

    print(f"threads={torch.get_num_threads()} batch={a.batch_size}x{a.seq_len} teacher=4x64 student=2x64 "
          f"vocab={len(tok)} R pairs={crr.token_swapper.num_pairs} repeats={a.repeats} (median, warm-up dropped)")
    print(f"{'gendered rows':>14} {'plain KD s/step':>16} {'CRR mean s/step':>16} {'ratio':>6} "
          f"{'median paired ratio':>20}")
    shares = [0.0, 0.5, 1.0, demo_share]
    for share in shares:
        n_g = round(share * a.batch_size)
        rows = (make_rows(tok, gendered_texts, n_g, a.seq_len)
                + make_rows(tok, neutral_texts, a.batch_size - n_g, a.seq_len))
        batch = collate([{"input_ids": r} for r in rows])
        t_plain, t_crr, paired = time_pair(plain, crr, batch, a.warmup, a.repeats)
        label = f"{n_g}/{a.batch_size}" + (" (demo)" if share is demo_share else "")
        print(f"{label:>14} {t_plain:16.4f} {t_crr:16.4f} {t_crr / t_plain:6.2f}x {paired:19.2f}x")

    from datasets import Dataset

    ds = Dataset.from_dict({"text": corpus[:2000]})
    t0 = time.perf_counter()
    aug = apply_cda(ds, swapper, mode="two_sided")
    t_cda = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds.map(lambda b: tok(b["text"]), batched=True)
    t_tok = time.perf_counter() - t0
    print(f"CDA two_sided on {len(ds)} records -> {len(aug)} rows: {1e3 * t_cda / len(ds):.3f} ms per record "
          f"(tokenising the same records: {1e3 * t_tok / len(ds):.3f} ms per record)")

if __name__ == "__main__":
    main()
