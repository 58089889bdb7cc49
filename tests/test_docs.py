"""Tracked text files and shipped configs: no merge-conflict markers; the commands in config comments parse."""

import os
import re
import shlex
import subprocess

import pytest
import yaml

from conftest import REPO

CONFLICT = re.compile(r"^(<<<<<<< |=======$|>>>>>>> )", re.M)
BINARY_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".pdf", ".ico", ".bin", ".safetensors", ".arrow", ".parquet",
                   ".gz", ".zip", ".pt")


def _tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.decode().split("\0") if name and not name.lower().endswith(BINARY_SUFFIXES)]


def test_no_merge_conflict_markers_in_tracked_text_files():
    bad = []
    for name in _tracked_files():
        path = os.path.join(REPO, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        if b"\0" in data:  # binary
            continue
        text = data.decode("utf-8", errors="replace")
        for m in CONFLICT.finditer(text):
            bad.append(f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}")
    assert not bad, "merge-conflict markers:\n" + "\n".join(bad)


def test_the_conflict_check_finds_markers():
    text = "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> branch\n"
    assert len(CONFLICT.findall(text)) == 3
    assert not CONFLICT.findall("a ======= b\n========\n# <<<<<<<x\n")


def _config_paths():
    folder = os.path.join(REPO, "configs")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".yaml"))


@pytest.mark.parametrize("path", _config_paths(), ids=os.path.basename)
def test_commands_in_config_comments_parse(path):
    """Every `distill ...` / `accelerate launch -m distill ...` line of a config's comments parses, names this
    config, and takes no flag its command does not know."""
    from distill.cli import build_parser

    parser, modules = build_parser()
    rel = os.path.relpath(path, REPO)
    commands = []
    for line in open(path, encoding="utf-8"):
        if not line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(distill [a-z-]+ --[^`#]*)", line):  # whole commands, not mentions of one
            commands.append(shlex.split(m.group(1).strip().rstrip("`").strip())[1:])
    assert commands, f"{rel}: no command in the header comment"
    for argv in commands:
        args, extra = parser.parse_known_args(argv)
        assert args.command in modules, argv
        if "--config" in argv:
            assert argv[argv.index("--config") + 1] == rel, argv
        if not getattr(modules[args.command], "ACCEPTS_EXTRA", False):
            assert not extra, argv


def test_new_gpu_recipes_are_what_their_names_say():
    from distill.commands.federated import load_configs
    from distill.distillation.config import load_config

    dp = load_config(os.path.join(REPO, "configs", "gpt2-to-distilgpt2-dp.yaml"), overrides={"bf16": False})
    assert dp.dp_enabled and not dp.packing and dp.dp_target_epsilon and dp.teacher_model_name_or_path == "gpt2"
    cached = load_config(os.path.join(REPO, "configs", "gpt2-to-distilgpt2-cached.yaml"), overrides={"bf16": False})
    assert cached.teacher_cache and cached.alpha_cos == 0
    args, fl = load_configs(os.path.join(REPO, "configs", "gpt2-fl.yaml"), ["--bf16", "false"])
    assert args.teacher_model_name_or_path == "gpt2" and fl.num_devices >= fl.devices_per_round > 0
    with open(os.path.join(REPO, "configs", "gpt2-to-distilgpt2-cached.yaml"), encoding="utf-8") as fh:
        header = fh.read()
    assert "distill cache-teacher --config configs/gpt2-to-distilgpt2-cached.yaml" in header
    assert yaml.safe_load(header)["teacher_cache"]
