"""`distill demo`: bias mitigation end to end, offline, on a teacher with a planted gender bias.

1. Generate a corpus in which each occupation co-occurs with one gender at a known skew
   (:mod:`distill.demo.corpus`), with GPT-2's real tokenizer.
2. Train a small GPT-2 teacher on it: it learns the planted bias.
3. Distil three students with the same budget through the public API (:func:`distill.train.run_training`):
   ``kd`` (plain), ``crr`` (counterfactual data augmentation + teacher-prediction perturbation) and
   ``crr_dp`` (CRR + DP-SGD at a stated epsilon).
4. Evaluate all four with :mod:`distill.fairness` on held-out prompts, and held-out perplexity.
5. Print a table; write ``demo_report.json``, ``demo.png`` and each model's fairness report.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from ..config import DistillationConfig
from ..errors import ConfigError
from ..tiny import TinyTeacherSpec, train_tiny_teacher
from .corpus import CorpusSpec, generate_corpus

VARIANTS = ("teacher", "kd", "crr", "crr_dp")


@dataclass
class DemoSpec:
    """Sizes of a demo run. ``quick()`` is the < 2 minute version used by tests."""

    num_documents: int = 8000
    heldout_documents: int = 600
    skew: float = 0.9
    teacher: TinyTeacherSpec = field(default_factory=lambda: TinyTeacherSpec(
        n_layer=4, n_embd=64, n_head=4, steps=600, batch_size=16, block_size=32, learning_rate=3e-3))
    student_layers: int = 2
    student_steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    dp_target_epsilon: float = 8.0
    dp_batch_size: int = 64
    seed: int = 0

    @classmethod
    def quick(cls, seed: int = 0) -> "DemoSpec":
        return cls(num_documents=3000, heldout_documents=300,
                   teacher=TinyTeacherSpec(n_layer=2, n_embd=64, n_head=4, steps=250, batch_size=16,
                                           block_size=32, learning_rate=4e-3),
                   student_layers=1, student_steps=100, seed=seed)


def heldout_perplexity(model, tokenizer, texts: list[str], batch_size: int = 32) -> float:
    """Token-weighted perplexity of ``model`` on ``texts`` (one text a row, right padding)."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = ids[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            keep = mask[:, 1:].float()
            total_nll += float((nll * keep).sum())
            total_tokens += int(keep.sum())
    return math.exp(total_nll / max(total_tokens, 1))


def student_config(spec: DemoSpec, out_dir: str, teacher_dir: str, variant: str) -> DistillationConfig:
    """The training config of one demo student: identical budgets, only CRR/DP differ."""
    kw = dict(
        output_dir=out_dir, teacher_model_name_or_path=teacher_dir, student_num_layers=spec.student_layers,
        block_size=spec.teacher.block_size, packing=False, validation_split_percentage=0,
        max_steps=spec.student_steps, per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate, warmup_steps=max(1, spec.student_steps // 20),
        lr_scheduler_type="cosine", temperature=2.0, alpha_kd=1.0, alpha_lm=1.0, logging_steps=10,
        save_strategy="no", eval_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        seed=spec.seed, disable_tqdm=False,
    )
    if variant in ("crr", "crr_dp"):
        kw.update(cda="two_sided", perturbation="mean")
    if variant == "crr_dp":
        kw.update(dp_enabled=True, dp_target_epsilon=spec.dp_target_epsilon,
                  per_device_train_batch_size=spec.dp_batch_size, learning_rate=spec.learning_rate * 2)
    return DistillationConfig(**kw)


def _check_out_dir(out: str) -> None:
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"{out} exists and is not empty: choose a new --out directory (nothing was changed).")


def run_demo(out: str, quick: bool = False, seed: int = 0, variants: tuple[str, ...] = VARIANTS) -> dict:
    """Run the demo into ``out`` and return the report (also written to ``out/demo_report.json``)."""
    from ..fairness.demo_eval import evaluate_for_demo  # noqa: F401  (filled in with the fairness module)
    from ..models import load_causal_lm, load_tokenizer
    from ..train import run_training

    _check_out_dir(out)
    spec = DemoSpec.quick(seed) if quick else DemoSpec(seed=seed)
    start = time.time()
    os.makedirs(out, exist_ok=True)
    texts = generate_corpus(CorpusSpec(num_documents=spec.num_documents, skew=spec.skew, seed=seed))
    heldout = generate_corpus(CorpusSpec(num_documents=spec.heldout_documents, skew=spec.skew, seed=seed + 1000))
    teacher_dir = os.path.join(out, "teacher")
    print(f"[1/3] Training the teacher on {len(texts)} documents with a planted {spec.skew:.0%} gender skew")
    train_tiny_teacher(teacher_dir, spec.teacher, texts=texts)
    dirs = {"teacher": teacher_dir}
    for variant in (v for v in variants if v != "teacher"):
        print(f"[2/3] Distilling student '{variant}'")
        args = student_config(spec, os.path.join(out, variant), teacher_dir, variant)
        run_training(args, texts=texts)
        dirs[variant] = args.output_dir
    print("[3/3] Evaluating gender disparity and held-out perplexity")
    tokenizer = load_tokenizer(teacher_dir)
    report = {"spec": asdict(spec), "variants": {}}
    for variant, path in dirs.items():
        model = load_causal_lm(path)
        metrics = evaluate_for_demo(model, tokenizer, out_dir=path, seed=seed)
        metrics["perplexity"] = heldout_perplexity(model, tokenizer, heldout)
        metrics["epsilon"] = _epsilon(path)
        report["variants"][variant] = metrics
    report["runtime_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(out, "demo_report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    return report


def _epsilon(path: str) -> float | None:
    privacy = os.path.join(path, "privacy.json")
    if not os.path.isfile(privacy):
        return None
    with open(privacy) as fh:
        return json.load(fh).get("epsilon")
