import os

# Under pytest-xdist (the default, see pyproject's addopts) the workers share the cores: one intra-op thread each,
# set before torch is imported anywhere (subprocesses such as `accelerate launch` inherit it).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(max(1, (os.cpu_count() or 1) // _WORKERS)))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402

from distill.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the cores, at most 4. Several tests mostly wait (Flower's SuperLink and
    SuperNodes, `accelerate launch`, fresh benchmark processes starting up); the extra worker runs CPU work meanwhile.
    On the idle 2-core machine (2026-12-04): 2 workers 564 s, 3 workers 510 s, 4 workers 495 s but with Ray's
    simulation starved (one test 46 s → 276 s), so 3."""
    return max(1, min((os.cpu_count() or 1) + 1, 4))


def pytest_collection_modifyitems(config, items):
    """Files holding slow (multi-process, end-to-end) tests first, so that parallel workers start them early and
    the short files fill the gaps (longest-first scheduling); the order within a file is kept."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def shared_dir(tmp_path_factory, name: str):
    """A directory shared by every worker of this test session (one per session without xdist)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Builtin models are created once per test session (all workers) in a private cache."""
    if "FAIR_DISTILL_CACHE" not in os.environ:
        os.environ["FAIR_DISTILL_CACHE"] = str(shared_dir(tmp_path_factory, "fair-distill-cache"))
    yield


@pytest.fixture(scope="session")
def gpt2_tok():
    from distill.builtin.tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    """A small GPT-2 (real GPT-2 tokenizer, 4 blocks of width 32), briefly trained, saved with safetensors."""
    from filelock import FileLock

    from distill.builtin.tiny_models import TinyTeacherSpec, train_tiny_teacher

    root = shared_dir(tmp_path_factory, "teacher")
    path = root / "tiny"
    with FileLock(str(root / "tiny.lock")):  # trained once; the other workers wait for it
        if not (path / "config.json").is_file():
            spec = TinyTeacherSpec(n_layer=4, n_embd=32, n_head=2, steps=40, batch_size=8, block_size=32)
            train_tiny_teacher(str(path), spec, progress=False)
    return str(path)


@pytest.fixture
def tiny_args(tmp_path, tiny_teacher_dir):
    """Factory of a fast DistillationConfig on the tiny teacher."""
    from distill.distillation.config import DistillationConfig

    def make(**kw):
        base = dict(output_dir=str(tmp_path / "out"), teacher_model_name_or_path=tiny_teacher_dir,
                    student_num_layers=2, dataset_name="builtin:tiny", block_size=32, max_train_samples=400,
                    per_device_train_batch_size=4, per_device_eval_batch_size=8, max_steps=4, learning_rate=1e-3,
                    logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0,
                    disable_tqdm=True, validation_split_percentage=10)
        base.update(kw)
        return DistillationConfig(**base)

    return make


@pytest.fixture
def run_cli(capsys):
    """``distill ARGS`` in this process: ``(exit code, stdout, stderr)``; argparse's exit counts as the code.

    For tests that check what a command writes, not that a fresh interpreter starts (that costs seconds each)."""
    from distill.cli import main

    def run(*args):
        capsys.readouterr()  # only this call's output
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, a bad flag
            rc = exc.code
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run
