"""Start-up cost of a short `distill train`: the tokenising map's fingerprint taken from the tokenizer's definition
(`distill.text_data._tokenize_fingerprint`, the default) against `datasets` hashing the map by pickling the
tokenizer (the behaviour before it). Both paths in one process, alternated run by run; median wall seconds of
`run_training` (tiny 4 x 32 teacher, `builtin:tiny`, 2 steps, with its validation pass).

    python scripts/bench_startup.py [--runs 4] [--teacher DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs per path (alternated)")
    parser.add_argument("--teacher", default=None,
                        help="a saved teacher to distil (default: a tiny 4 x 32 GPT-2 trained here for 40 steps)")
    opts = parser.parse_args(argv)

    import distill.text_data as text_data
    from distill.builtin.tiny_models import TinyTeacherSpec, train_tiny_teacher
    from distill.distillation.config import DistillationConfig
    from distill.distillation.train import run_training

    work = tempfile.mkdtemp(prefix="bench-startup-")
    teacher = opts.teacher or os.path.join(work, "teacher")
    if not opts.teacher:
        train_tiny_teacher(teacher, TinyTeacherSpec(n_layer=4, n_embd=32, n_head=2, steps=40, batch_size=8,
                                                    block_size=32), progress=False)

    def config(out: str) -> DistillationConfig:
        return DistillationConfig(output_dir=os.path.join(work, out), teacher_model_name_or_path=teacher,
                                  student_num_layers=2, dataset_name="builtin:tiny", block_size=32,
                                  max_train_samples=400, per_device_train_batch_size=4, max_steps=2,
                                  logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=42,
                                  disable_tqdm=True, validation_split_percentage=10)

    ours = text_data._tokenize_fingerprint
    seconds: dict[str, list[float]] = {"pickled_tokenizer": [], "tokenizer_definition": []}
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout holds only the JSON
            run_training(config("warm-up"))
            for i in range(opts.runs):
                for path in seconds:
                    text_data._tokenize_fingerprint = ours if path == "tokenizer_definition" else (lambda *a: None)
                    start = time.perf_counter()
                    run_training(config(f"{path}-{i}"))
                    seconds[path].append(round(time.perf_counter() - start, 3))
    finally:
        text_data._tokenize_fingerprint = ours
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: round(statistics.median(v), 3) for k, v in seconds.items()}
    result = {"median_seconds": medians, "seconds": seconds,
              "speedup": round(medians["pickled_tokenizer"] / medians["tokenizer_definition"], 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
