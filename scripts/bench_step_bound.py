"""How close a KD step at GPT-2's shapes comes to the cost of the models alone, and what the row-aligned output
layers (`distill.distillation.aligned_logits`) save. Four steps, round-robin in one process, on one batch:

* ``kd`` — our KD step with GKD's loss (the bench's ``kd_matched``), as shipped;
* ``kd_unaligned`` — the same trainer with the models' own output layers (the aligned rows switched off);
* ``no_loss`` — the step without any loss term: the teacher's forward and output layer, the student's forward and
  output layer, backward from a fixed gradient on the student's logits (random, of order 1e-6), the
  optimizer step. What both trainers share; no loss can make a step much cheaper than this (it is not a strict
  bound: its fixed gradient and allocations differ from a real step's, by a few per cent either way);
* ``trl_gkd`` — TRL's ``GKDTrainer`` on the same student and batch (skipped without TRL or with ``--skip-trl``).

Before them, the student's output layer alone on ``B·T`` positions, without gradients (``output_layer_seconds``):
``F.linear`` into a fresh contiguous tensor against the row-aligned one, alternated.

Ratios are medians over rounds of each round's ratio (``bench_common.Timings``). The glibc allocator is tuned as
``distill train`` tunes it. GPT-2 12 x 768 (random weights, vocabulary 50257) → 6 blocks by default:

    python scripts/bench_step_bound.py [--batch 2 --seq 512 --rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from bench_common import (demo_batch, inputs_for, log, make_real_contender, save_gpt2_shape_teacher,  # noqa: E402
                          time_steps, timed_step, trl_available)


def _switch(on: bool) -> None:
    """The aligned output layers on or off for the trainer's next step."""
    from distill.distillation import aligned_logits

    aligned_logits.ENABLED = on


def _no_loss_step(trainer, inputs: dict, grad: torch.Tensor) -> float:
    """The step without a loss: both forwards through their output layers (aligned where the trainer's are),
    backward from ``grad``, the optimizer step."""
    import time

    from distill.distillation.aligned_logits import linear_logits
    from distill.distillation.teacher_side import no_logits

    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    body, head = trainer._teacher_split
    start = time.perf_counter()
    with torch.no_grad():
        linear_logits(head, body(**model_inputs).last_hidden_state)
    out = trainer.model(**model_inputs, output_hidden_states=True, logits_to_keep=no_logits())
    linear_logits(trainer._student_head, out.hidden_states[-1]).backward(grad)
    trainer.optimizer.step()
    trainer.model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _gemm_seconds(head, hidden: torch.Tensor, repeat: int) -> dict[str, float]:
    """Median seconds of the student's output layer alone on ``hidden`` ``[N, H]``, no gradient, alternated:
    ``F.linear`` into a fresh contiguous ``[N, V]`` tensor against :func:`linear_logits` (rows padded)."""
    import time

    import torch.nn.functional as F

    from distill.distillation.aligned_logits import linear_logits

    runs = {"contiguous": lambda: F.linear(hidden, head.weight, head.bias),
            "aligned": lambda: linear_logits(head, hidden)}
    seconds = {name: [] for name in runs}
    with torch.no_grad():
        for _ in range(repeat + 1):  # the first of each is a warm-up
            for name, run in runs.items():
                start = time.perf_counter()
                run()  # (the logits are freed on return)
                seconds[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(v[1:]), 4) for name, v in seconds.items()}


def _loss(trainer, inputs: dict, aligned: bool) -> tuple[float, int]:
    """The plain loss on ``inputs`` (dropout off) and the row stride of the student's logits it read."""
    _switch(aligned)
    try:
        with torch.no_grad():
            loss, _, outputs = trainer.distillation_step_loss(trainer.model.eval(), inputs, fused=False)
            return float(loss), outputs.logits.stride(-2)
    finally:
        trainer.model.train()
        _switch(True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of one step per contender (order reversed "
                                                               "every other round), after a warm-up step each")
    parser.add_argument("--teacher-layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--student-layers", type=int, default=6)
    parser.add_argument("--skip-trl", action="store_true")
    opts = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from distill.runtime import tune_cpu_allocator

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tune_cpu_allocator()
    work = tempfile.mkdtemp(prefix="bench-step-bound-")
    try:
        return _run(opts, work)
    finally:  # the saved GPT-2-shape teacher is about 0.5 GB
        shutil.rmtree(work, ignore_errors=True)


def _run(opts, work: str) -> dict:
    from transformers import AutoModelForCausalLM

    teacher_dir = save_gpt2_shape_teacher(os.path.join(work, "teacher"), opts.teacher_layers, opts.width)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    kd = make_real_contender("kd_matched", teacher_dir, opts.batch, work, teacher=teacher,
                             student_layers=opts.student_layers)
    batch = demo_batch(kd.processing_class, opts.batch, opts.seq, kd.args.device)
    grad = torch.randn(opts.batch, opts.seq, kd._student_head.weight.shape[0],
                       generator=torch.Generator().manual_seed(0)).mul_(1e-6)
    steps = {"kd": lambda: (_switch(True), timed_step(kd, batch))[1],
             "kd_unaligned": lambda: (_switch(False), timed_step(kd, batch))[1],
             "no_loss": lambda: _no_loss_step(kd, batch, grad)}
    with_trl = trl_available() and not opts.skip_trl
    if with_trl:
        trl = make_real_contender("trl_gkd", teacher_dir, opts.batch, work, student_layers=opts.student_layers)
        trl_inputs = inputs_for("trl_gkd", batch)
        steps["trl_gkd"] = lambda: timed_step(trl, trl_inputs)
    try:
        (aligned_loss, aligned_stride), (plain_loss, plain_stride) = _loss(kd, batch, True), _loss(kd, batch, False)
        hidden = torch.randn(opts.batch * opts.seq, kd._student_head.weight.shape[1])
        gemm = _gemm_seconds(kd._student_head, hidden, max(3, opts.rounds))
        log(f"step bound at {opts.batch} x {opts.seq}: {opts.rounds} rounds of {', '.join(steps)}")
        timings = time_steps(steps, 1, opts.rounds, 1)
    finally:
        _switch(True)
    result = {"batch": opts.batch, "seq": opts.seq, "rounds": opts.rounds,
              "step_seconds": {n: round(timings.median(n), 3) for n in steps},
              "aligned_vs_unaligned": round(timings.ratio("kd", "kd_unaligned"), 3),
              "kd_vs_no_loss": round(timings.ratio("kd", "no_loss"), 3),
              "no_loss_vs_trl": round(timings.ratio("no_loss", "trl_gkd"), 3) if with_trl else None,
              "kd_vs_trl": round(timings.ratio("kd", "trl_gkd"), 3) if with_trl else None,
              "output_layer_seconds": gemm,
              "loss_parity_abs_diff": abs(aligned_loss - plain_loss),
              "logits_row_stride": {"kd": aligned_stride, "kd_unaligned": plain_stride},
              "per_round": [{n: round(r[n][0], 3) for n in steps} for r in timings.rounds]}
    log(json.dumps({k: v for k, v in result.items() if k != "per_round"}))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
