"""Cost of Flower's simulation engine against the same local training done in-process.

1. **Overhead per round.** The same federated run twice, with the same seed (so the same devices are selected
   each round and train on the same records with the same local seeds):
   * in-process: a plain loop that calls the devices' local step (:class:`~distill.federated.local_training.LocalDistillation`, i.e.
     DistillationTrainer) one after the other and averages the weights (FedAvg, weighted by records);
   * Flower: ``run_federated`` in the simulation engine (Ray), with ``client_cpus`` = all cores so that one
     worker trains the devices one after the other, as the loop does.
   Both time the training part of a round (selection → local steps → average), not the server-side evaluation.
   Ratio = median Flower round / median in-process round, rounds 2.. (round 1 also starts Ray's workers and
   loads the teacher in them: reported apart, as ``first_round_seconds``).
2. **Round time against N devices** (Flower), K fixed: the per-round query of every device grows with N.

    python scripts/bench_federated.py                      # table; --json for one JSON object
    python scripts/bench_federated.py --devices 4 8 16 --rounds 4 --local-steps 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_args(out: str, teacher: str, seed: int):
    from distill.distillation.config import DistillationConfig

    return DistillationConfig(
        output_dir=out, teacher_model_name_or_path=teacher, student_num_layers=2, dataset_name="builtin:demo",
        max_train_samples=800, validation_split_percentage=5, block_size=64, packing=False,
        per_device_train_batch_size=8, per_device_eval_batch_size=32, learning_rate=1e-3,
        lr_scheduler_type="constant", report_to="none", use_cpu=True, seed=seed, disable_tqdm=True,
        fairness_max_prompts_per_group=1)


def in_process_rounds(args, fl, local, seed: int) -> list[float]:
    """The same rounds as the simulation, as a plain Python loop: seconds of each round's training part."""
    import numpy as np

    from distill.federated.devices import DeviceData
    from distill.federated.selection import select_devices
    from distill.federated.local_training import process_models
    from distill.federated.simulation import load_corpus

    data = DeviceData(load_corpus(args)[0], fl, seed)
    _, student, _ = process_models(args)  # the initial student the local step starts from
    params = dict(student.named_parameters())
    state = {n: params[n].detach().clone() for n in local.trainable}
    rng = np.random.default_rng(seed)
    times = []
    for r in range(1, fl.num_rounds + 1):
        t0 = time.perf_counter()
        counts = data.counts(r)
        chosen, _ = select_devices(counts, fl.devices_per_round, rng, fl.selection, fl.activity_exponent)
        outs = [(local(state, data.records(d, r), r, d)[0], counts[d]) for d in chosen]
        total = sum(n for _, n in outs)
        state = {k: sum(s[k] * (n / total) for s, n in outs) for k in state}
        times.append(time.perf_counter() - t0)
    return times


def flower_rounds(args, fl, local) -> tuple[list[float], float]:
    from distill.federated.simulation import run_federated

    t0 = time.perf_counter()
    report = run_federated(args, fl, local, print_fn=lambda s: None)
    total = time.perf_counter() - t0
    return [e["round_seconds"] for e in report["rounds"][1:]], total


def main(argv=None) -> dict:
    from distill.federated.config import FederatedConfig
    from distill.federated.local_training import make_local_step
    from distill.model_loading import resolve_builtin
    from distill.runtime import tune_cpu_allocator

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="builtin:tiny-gpt2")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--local-steps", type=int, default=3)
    p.add_argument("--devices-per-round", type=int, default=2)
    p.add_argument("--overhead-devices", type=int, default=4)
    p.add_argument("--devices", type=int, nargs="*", default=[4, 8, 16], help="N for the round-time sweep.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    tune_cpu_allocator()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    teacher = resolve_builtin(a.teacher)
    cores = os.cpu_count() or 1
    tmp = tempfile.mkdtemp(prefix="bench-fl-")
    base = make_args(os.path.join(tmp, "x"), teacher, a.seed)
    fl = FederatedConfig(num_devices=a.overhead_devices, devices_per_round=a.devices_per_round,
                         num_rounds=a.rounds, local_steps=a.local_steps, selection="activity",
                         eval_max_records=16, eval_occupations=["nurse", "carpenter"], client_cpus=float(cores),
                         seed=a.seed)
    local = make_local_step(base, fl)  # builds the teacher and the initial student once in this process
    import contextlib

    quiet = contextlib.redirect_stdout(sys.stderr)  # the Trainer prints its log dicts: keep --json's stdout clean
    quiet.__enter__()
    inproc = in_process_rounds(base, fl, local, a.seed)
    sim, sim_total = flower_rounds(dataclasses.replace(base, output_dir=os.path.join(tmp, "overhead")), fl, local)
    result = {
        "machine": f"{os.cpu_count()} CPUs", "rounds": a.rounds, "local_steps": a.local_steps,
        "devices_per_round": a.devices_per_round,
        "in_process_round_seconds": inproc, "flower_round_seconds": sim,
        "first_round_seconds": {"in_process": inproc[0], "flower": sim[0]},
        "flower_total_seconds": sim_total,
        "overhead_ratio": statistics.median(sim[1:]) / statistics.median(inproc[1:]),
        "round_seconds_vs_devices": {a.overhead_devices: statistics.median(sim[1:])},
    }
    for n in [n for n in a.devices if n != a.overhead_devices]:
        fl_n = dataclasses.replace(fl, num_devices=n)
        times, _ = flower_rounds(dataclasses.replace(base, output_dir=os.path.join(tmp, f"n{n}")), fl_n, local)
        result["round_seconds_vs_devices"][n] = statistics.median(times[1:] if len(times) > 1 else times)
    quiet.__exit__(None, None, None)
    lines = [f"Overhead per round (median of rounds 2..{a.rounds}, K={a.devices_per_round}, "
             f"{a.local_steps} local steps): in-process {statistics.median(inproc[1:]):.2f} s, "
             f"Flower {statistics.median(sim[1:]):.2f} s -> {result['overhead_ratio']:.2f}x (goal <= 1.5x)",
             f"First round: in-process {inproc[0]:.2f} s, Flower {sim[0]:.2f} s (starts the workers)",
             "Round time vs N devices (Flower, median of rounds 2..): "
             + ", ".join(f"N={n}: {s:.2f} s" for n, s in result["round_seconds_vs_devices"].items())]
    print("\n".join(lines), file=sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
