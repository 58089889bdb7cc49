"""scripts/bench.py must keep running: one tiny pass, every key of its JSON present and sane.

The numbers of such a short run mean nothing; the benchmark itself is run by hand (README "Performance").
"""

import importlib.util
import json
import os
import subprocess
import sys

from conftest import REPO


def test_bench_smoke_json_has_every_comparison():
    cmd = [sys.executable, os.path.join(REPO, "scripts", "bench.py"), "--json", "--steps", "1", "--repeat", "1",
           "--warmup", "0", "--batch", "2", "--seq", "16", "--eval-prompts", "3", "--eval-new-tokens", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=dict(os.environ))
    assert res.returncode == 0, res.stderr[-4000:]
    r = json.loads(res.stdout)
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
    assert "comparison" in res.stderr  # the table goes to stderr with --json
