"""scripts/bench.py must keep running: one tiny pass, every key of its JSON present and sane.

The numbers of such a short run mean nothing; the benchmark itself is run by hand (README "Performance").
"""

import importlib
import importlib.util
import json
import os

import pytest

from conftest import REPO


@pytest.fixture
def run_script(capsys, monkeypatch):
    """``python scripts/NAME.py ARGS`` in this process (its memory probes still start fresh processes):
    ``(the JSON it printed on stdout, its stderr)``. The scripts' global settings are restored afterwards."""
    import torch
    from transformers.utils import logging as hf_logging

    monkeypatch.syspath_prepend(os.path.join(REPO, "scripts"))
    monkeypatch.chdir(REPO)

    def run(name, args):
        verbosity, bars, threads = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), torch.get_num_threads()
        capsys.readouterr()
        try:
            importlib.import_module(name).main(args)
        finally:
            hf_logging.set_verbosity(verbosity)
            (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return json.loads(out.out), out.err

    return run


@pytest.fixture
def memory_in_process(monkeypatch, run_script):
    """The scripts' GPT-2-shape memory runs in this process (``bench_common.MEMORY_IN_PROCESS``), not in a fresh one
    each (~12 s of start-up on a slow 2-core machine). Runs under an address-space cap (TRL's) still start their own
    process: the cap must not apply to this one. ``bench_smoke`` covers the fresh-process path of the tiny part
    (``bench_dp.py``'s child)."""
    import bench_common

    measure_real_memory = bench_common.measure_real_memory
    calls = []

    def measure(*args, rlimit_gb=None, **kw):
        calls.append("fresh" if rlimit_gb else "in-process")
        return measure_real_memory(*args, rlimit_gb=rlimit_gb, **kw)

    monkeypatch.setattr(bench_common, "MEMORY_IN_PROCESS", True)
    monkeypatch.setattr(bench_common, "measure_real_memory", measure)
    return calls


def test_bench_smoke_json_has_every_comparison(run_script):
    r, err = run_script("bench", ["--json", "--steps", "1", "--repeat", "1", "--warmup", "0", "--batch", "2", "--seq",
                                  "16", "--eval-prompts", "3", "--eval-new-tokens", "3"])
    with_trl = importlib.util.find_spec("trl") is not None
    for key in ("crr_vs_kd", "dp_vs_nondp", "opacus_hooks_vs_nondp", "dp_mem_vs_nondp", "eval_batched_speedup",
                "cached_kd_vs_kd", "cached_crr_vs_cached_kd"):
        assert r[key] > 0, key
    assert 0 < r["cache_bytes_per_token"] <= 400  # top-64 ids (uint16) + float16 log-probs + tail
    for key in ("crr_vs_kd", "dp_vs_nondp", "dp_mem_vs_nondp", "eval_batched_speedup"):
        assert r["targets"][key]["met"] in (True, False)
    assert (r["kd_vs_trl"] is not None) == with_trl
    if with_trl:  # both trainers compute the same loss on the same batch
        assert r["loss_parity_abs_diff"] < 1e-4
    else:
        assert any("TRL" in n for n in r["notes"])
    assert r["eval_identical_outputs"] is True  # batching does not change greedy generations
    assert r["env"]["torch"] and r["env"]["device"]
    assert set(r["step_seconds"]) >= {"kd", "crr", "dp_fast", "dp_hooks", "dp_ghost"}
    assert "comparison" in err  # the table goes to stderr with --json


SMALL_GPT2 = ["--real-teacher-layers", "1", "--real-width", "32", "--real-student-layers", "1"]


def test_bench_real_shapes_alone_reports_memory_and_trl(run_script, memory_in_process):
    """``--real-shapes --skip-tiny`` (the spelling the docs use), on a small GPT-2 to stay CI-sized; TRL's capped runs
    in a fresh process each (the path of every memory run outside tests), ours in this one."""
    with_trl = importlib.util.find_spec("trl") is not None
    contenders = "kd_matched,trl_gkd" if with_trl else "kd_matched"
    r, err = run_script("bench", ["--real-shapes", "--skip-tiny", "--gpu-batch", "1", "--gpu-seq", "16", "--json",
                                  "--real-repeat", "1", "--real-warmup", "0", *SMALL_GPT2,
                                  "--real-contenders", contenders, "--mem-batch", "2", "--mem-seq", "8",
                                  "--recipe-memory", "--recipe-shape", "1x8", "--skip-cache"])
    real = r["real_shapes"]
    assert "targets" not in r and "step_seconds" not in r  # the tiny part was skipped
    assert (real["batch"], real["seq"]) == (1, 16) and real["memory_shape"] == [2, 8]
    assert real["floor_mb"] > 0 and real["kd_peak_vs_floor"] > 0
    assert real["recipe_peak_mb"] > 0 and real["recipe_peak_mb_checkpointing"] > 0
    assert real["recipe"]["recipe_shape"] == [1, 8] and real["recipe"]["recipe_floor_mb"] > 0
    trl_peak = real["recipe_trl_peak_mb"]
    assert (trl_peak == "oom" or trl_peak > 0) if with_trl else trl_peak is None
    assert "cached_kd_vs_kd" not in real  # --skip-cache
    assert real["targets"]["recipe_peak_mb_checkpointing"]["met"] in (True, False)
    for key in ("kd_vs_trl", "kd_mem_vs_trl", "crr_vs_kd", "dp_vs_nondp", "dp_mem_vs_nondp", "peak_mb"):
        assert key in real, key
    assert real["crr_vs_kd"] is None and real["dp_vs_nondp"] is None  # contenders left out: no ratio
    assert set(real["peak_mb"]) == set(contenders.split(",")) and all(v > 0 for v in real["peak_mb"].values())
    if with_trl:
        assert real["kd_vs_trl"] > 0 and real["kd_mem_vs_trl"] > 0
        assert real["targets"]["kd_mem_vs_trl"]["met"] in (True, False)
    assert "peak training memory" in err
    # kd_matched's probe and the recipe's two KD runs in this process, TRL's probe and recipe run fresh
    expected = ["in-process", "fresh", "in-process", "in-process", "fresh"] if with_trl else ["in-process"] * 3
    assert memory_in_process == expected


def test_gpu_check_smoke_on_cpu(run_script, tmp_path, memory_in_process):
    out = tmp_path / "gpu_check.json"
    r, _ = run_script("gpu_check", ["--teacher-layers", "1", "--width", "32", "--student-layers", "1", "--batch", "2",
                                    "--seq", "16", "--kd-steps", "4", "--repeat", "1", "--steps", "1",
                                    "--contenders", "kd,dp_fast", "--out", str(out)])
    assert json.loads(out.read_text()) == r  # the file holds the final object (it is rewritten after each part)
    real = r["real_shapes"]
    assert real["cached_kd_vs_kd"] > 0 and real["cache"]["cache_top_k"] == 64 and real["cache"]["seq"] == 16
    assert real["dp_vs_nondp"] > 0 and real["dp_mem_vs_nondp"] > 0 and set(real["tokens_per_second"]) == {"kd", "dp_fast"}
    for key in ("memory_shape", "floor_mb", "kd_peak_vs_floor", "recipe_peak_mb", "recipe_peak_mb_checkpointing",
                "recipe_trl_peak_mb", "kd_tokens_per_second_vs_trl"):
        assert key in real, key
    assert real["recipe_peak_mb"] is None and real["kd_tokens_per_second_vs_trl"] is None  # off on a CPU / no TRL
    run = r["kd_run"]
    assert run["steps"] == 4 and len(run["losses"]) == 4 and all(v == v and v > 0 for v in run["losses"])
    assert run["falling"] == (run["last_mean"] < run["first_mean"])
    assert any("smoke" in n for n in r["notes"]) or "cpu" not in r["env"]["device"]


def test_scripts_share_helpers_only_through_bench_common():
    """No script imports another script (lazy imports included): what they share lives in bench_common.py,
    which imports no script."""
    import ast

    scripts = os.path.join(REPO, "scripts")
    names = {f[:-3] for f in os.listdir(scripts) if f.endswith(".py")}
    assert "bench_common" in names
    for f in sorted(names):
        tree = ast.parse(open(os.path.join(scripts, f + ".py"), encoding="utf-8").read())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        allowed = set() if f == "bench_common" else {"bench_common"}
        assert imported & names <= allowed, (f, sorted(imported & names - allowed))


def test_bench_startup_smoke(run_script, tiny_teacher_dir):
    result, _ = run_script("bench_startup", ["--runs", "1", "--teacher", tiny_teacher_dir])
    assert set(result["seconds"]) == {"pickled_tokenizer", "tokenizer_definition"}
    assert all(len(v) == 1 and v[0] > 0 for v in result["seconds"].values()) and result["speedup"] > 0


def test_step_bound_smoke_times_the_four_steps_and_checks_the_aligned_loss(run_script):
    """``scripts/bench_step_bound.py`` on a small GPT-2: the aligned and unaligned steps compute the same loss, through
    logits rows of the padded and the plain width."""
    with_trl = importlib.util.find_spec("trl") is not None
    r, err = run_script("bench_step_bound", ["--batch", "1", "--seq", "16", "--rounds", "1", "--teacher-layers", "1",
                                             "--width", "32", "--student-layers", "1"])
    assert set(r["step_seconds"]) == {"kd", "kd_unaligned", "no_loss"} | ({"trl_gkd"} if with_trl else set())
    assert all(v > 0 for v in r["step_seconds"].values())
    assert r["loss_parity_abs_diff"] < 1e-5
    assert r["logits_row_stride"] == {"kd": 50272, "kd_unaligned": 50257}
    assert r["aligned_vs_unaligned"] > 0 and r["kd_vs_no_loss"] > 0
    gemm = r["output_layer_seconds"]
    assert set(gemm) == {"contiguous", "aligned"} and min(gemm.values()) > 0
    assert (r["kd_vs_trl"] is not None) == with_trl and (r["no_loss_vs_trl"] is not None) == with_trl
    assert "step bound at 1 x 16" in err
