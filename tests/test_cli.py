import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from mp_helpers.launch import free_port


def _distill(*args, env=None, timeout=1500):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=full_env)


def test_help_lists_commands_and_config_keys(run_cli):
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "train" in out and "tiny-teacher" in out
    rc, out, _ = run_cli("train", "--help")
    assert rc == 0
    for key in ("--config", "--temperature", "--alpha_kd", "--teacher_model_name_or_path", "--student_layers"):
        assert key in out


def test_bad_yaml_key_is_one_clear_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("temprature: 2.0\n")
    res = _distill("train", "--config", str(cfg))
    assert res.returncode == 2
    assert "unknown key 'temprature' (did you mean temperature?)" in res.stderr
    assert "Traceback" not in res.stderr


def test_train_tiny_config_end_to_end(tmp_path, capsys, monkeypatch):
    """The shipped tiny config: builtin teacher created offline, student saved and loadable, perplexity improves.

    In-process and 12 steps instead of the config's 60. The builtin teacher is created here through the real
    path (``builtin:tiny-gpt2`` → train, cache, load) but with 60 of its 300 training steps, in a private cache:
    this test checks the plumbing; the full teacher's quality is what ``distill demo`` and the docs measure."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from distill.builtin import tiny_models
    from distill.cli import main

    monkeypatch.setenv("FAIR_DISTILL_CACHE", str(tmp_path / "cache"))
    spec = tiny_models.BUILTIN_MODELS["tiny-gpt2"]
    monkeypatch.setitem(tiny_models.BUILTIN_MODELS, "tiny-gpt2", dataclasses.replace(spec, steps=60))

    out = tmp_path / "tiny"
    rc = main(["train", "--config", os.path.join(REPO, "configs", "tiny.yaml"), "--output_dir", str(out),
               "--disable_tqdm", "true", "--max_steps", "12", "--eval_steps", "6", "--warmup_steps", "2",
               "--logging_steps", "3"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.n_layer == 2
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    ppl = [h["eval_perplexity"] for h in history if "eval_perplexity" in h]
    assert len(ppl) >= 2 and ppl[-1] < ppl[0]  # eval_on_start measures the untrained student
    assert any("loss_kd" in h and "loss_lm" in h for h in history)
    assert os.path.isfile(tmp_path / "cache" / f"tiny-gpt2-{tiny_models.CACHE_VERSION}" / "model.safetensors")


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, tiny_teacher_dir):
    """torchrun-style launch (accelerate's --multi_gpu) on CPU: use_cpu in the config selects gloo/MULTI_CPU."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distill", "train",
           "--config", "configs/tiny.yaml", "--teacher_model_name_or_path", tiny_teacher_dir,
           "--output_dir", str(out), "--max_steps", "4", "--eval_strategy", "no", "--eval_on_start", "false",
           "--save_strategy", "no", "--per_device_train_batch_size", "2", "--block_size", "32",
           "--include_num_input_tokens_seen", "true", "--logging_steps", "1", "--disable_tqdm", "true"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ))
    assert res.returncode == 0, res.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # 2 processes x 2 samples x 32 tokens per step: tokens seen prove both ranks trained
    seen = [h["num_input_tokens_seen"] for h in state["log_history"] if "num_input_tokens_seen" in h]
    assert max(seen) == 4 * 2 * 2 * 32
    assert (out / "model.safetensors").exists()


def _readme_commands():
    """Every `distill ...` command line of the README: ```bash blocks and inline `...` spans (no placeholders)."""
    import re
    import shlex

    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += [m for m in re.findall(r"`([^`\n]+)`", text)  # inline: whole commands, not mentions of a name
              if " --" in m and not re.search(r"\.\.\.|\bDIR\b|\bFILE\b| N ", m)]
    commands = []
    for line in lines:
        line = re.split(r"\s+#\s", line)[0].strip()
        line = line.split("|")[-1].strip()  # `echo ... | distill ...`
        if line.startswith("accelerate launch") and " -m distill " in line:
            line = "distill " + line.split(" -m distill ", 1)[1]
        if line.startswith("distill "):
            commands.append(shlex.split(line)[1:])
    return commands


def test_every_readme_command_parses():
    """Each README command parses with the command's own parser; `train` commands load their config."""
    import torch

    from distill.cli import build_parser
    from distill.distillation.config import load_config, read_yaml

    commands = _readme_commands()
    assert len(commands) >= 15 and ["demo"] in commands
    parser, modules = build_parser()
    for argv in commands:
        args, extra = parser.parse_known_args(argv)
        assert args.command in modules, argv
        if args.command == "train" and not getattr(args, "help", False):
            config_file = extra[extra.index("--config") + 1]
            # the GPU recipes ask for bf16, which TrainingArguments refuses on a machine without a GPU
            gpu_only = read_yaml(config_file).get("bf16") and not torch.cuda.is_available()
            config = load_config(cli_args=extra, overrides={"bf16": False} if gpu_only else None)
            assert config.output_dir
        elif args.command == "federated":  # training keys and the federated: section, from YAML and flags
            from distill.commands.federated import load_configs

            config, fl = load_configs(args.config, extra, compare=args.compare)
            assert config.output_dir and fl.num_rounds > 0
        else:
            assert not extra, argv


def test_config_equals_form_and_yaml_type_errors(tmp_path):
    from distill.distillation.config import load_config

    a = load_config(cli_args=["--config", "configs/tiny.yaml", "--output_dir", str(tmp_path / "a")])
    b = load_config(cli_args=["--config=configs/tiny.yaml", "--output_dir", str(tmp_path / "a")])
    assert a.distill_dict() == b.distill_dict() and b.teacher_model_name_or_path == "builtin:tiny-gpt2"
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: abc\n")
    for flag in (["--config", str(bad)], [f"--config={bad}"]):
        res = _distill("train", *flag, "--output_dir", str(tmp_path / "o"))
        assert res.returncode == 2 and "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "learning_rate" in lines[0] and str(bad) in lines[0] and "usage" not in lines[0]
    assert not (tmp_path / "o").exists()


def test_train_help_lists_own_keys_first(run_cli):
    rc, out, _ = run_cli("train", "--help")
    assert rc == 0
    ours, theirs = out.index("fair-distill keys"), out.index("transformers.TrainingArguments keys")
    assert ours < theirs
    assert ours < out.index("--temperature") < theirs and out.index("--learning_rate") > theirs
    assert len(out[:ours].splitlines()) < 15  # no 600-line usage dump before our keys


# ---- one convention across the commands ----------------------------------------------------------------
def _options(parser):
    """(command, action) for every option of every command, the hidden ones included."""
    for name, sub in parser.command_parsers.items():
        for action in sub._actions:
            if action.option_strings:
                yield name, action


def test_every_option_has_help_and_takes_dashes_or_underscores():
    import argparse

    from distill.cli import build_parser

    parser, _ = build_parser()
    for name, action in _options(parser):
        if action.help == argparse.SUPPRESS:  # a deprecated alias
            continue
        assert action.help and action.help.strip(), f"distill {name} {action.option_strings[0]} has no help"
        for opt in action.option_strings:
            if opt.startswith("--") and ("-" in opt[2:] or "_" in opt[2:]):
                assert {"--" + opt[2:].replace("-", "_"), "--" + opt[2:].replace("_", "-")} <= set(
                    action.option_strings), (name, opt)


def test_the_output_directory_is_output_dir_and_old_spellings_are_hidden():
    import argparse

    from distill.cli import DeprecatedAlias, build_parser

    parser, _ = build_parser()
    for name, action in _options(parser):
        for opt in action.option_strings:
            if opt in ("--out", "--output"):
                assert isinstance(action, DeprecatedAlias) and action.help == argparse.SUPPRESS, (name, opt)
    for name in ("evaluate", "audit", "cache-teacher", "tiny-teacher"):
        assert "--output_dir" in parser.command_parsers[name].format_help(), name
    assert "--out " not in parser.command_parsers["evaluate"].format_help()


def test_deprecated_alias_works_and_warns_once(capsys):
    from distill.cli import build_parser

    parser, _ = build_parser()
    args, extra = parser.parse_known_args(["evaluate", "--model", "m", "--out", "a", "--out", "b"])
    assert args.output_dir == "b" and not extra
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out is deprecated" in err[0] and "--output_dir" in err[0]
    args, _ = parser.parse_known_args(["evaluate", "--model", "m", "--output_dir", "c"])
    assert args.output_dir == "c" and capsys.readouterr().err == ""
    args, _ = parser.parse_known_args(["audit", "--model", "m", "--output", "a.json"])
    assert args.output == "a.json" and "--output is deprecated" in capsys.readouterr().err


def test_every_boolean_is_a_bare_flag_or_true_false():
    from distill.cli import BoolAction, build_parser

    parser, _ = build_parser()
    flags = [(name, a) for name, a in _options(parser)
             if a.nargs == 0 and a.dest not in ("help", "version")]
    assert not flags, f"store_true/store_false options left: {[(n, a.option_strings[0]) for n, a in flags]}"
    bools = [(name, a) for name, a in _options(parser) if isinstance(a, BoolAction)]
    assert len(bools) >= 15
    required = {"counterfactual": ["x"], "evaluate": ["--model", "m"], "card": ["--model", "m"],
                "push": ["--model", "m", "--repo-id", "a/b"], "federated": ["--config", "c.yaml"]}
    for name, action in bools:
        opt, base = action.option_strings[0], required.get(name, [])
        for argv, value in (([opt], True), ([opt, "true"], True), ([opt, "false"], False), ([f"{opt}=no"], False),
                            ([], action.default)):
            args, extra = parser.parse_known_args([name, *argv, *base])
            assert getattr(args, action.dest) is value and not extra, (name, argv)


def test_a_bare_boolean_does_not_swallow_a_positional_argument(run_cli):
    rc, out, _ = run_cli("counterfactual", "--names", "James met his father.")
    assert rc == 0 and out.strip() == "Mary met her mother."
    rc, out, _ = run_cli("counterfactual", "--names", "false", "James met his father.")
    assert rc == 0 and out.strip() == "James met her mother."
    rc, _, err = run_cli("counterfactual", "--names=maybe", "x")
    assert rc == 2 and "expected true or false" in err


def test_names_help_matches_the_name_table():
    from distill.cli import build_parser

    table = os.path.join(REPO, "distill", "counterfactual", "data", "first_names.tsv")
    pairs = {tuple(line.split("\t")) for line in open(table, encoding="utf-8").read().splitlines()
             if line and not line.startswith("#")}
    helptext = build_parser()[0].command_parsers["counterfactual"].format_help()
    import re

    shown = re.findall(r"([A-Z][a-z]+) <-> ([A-Z][a-z]+)", helptext)
    assert shown
    for male, female in shown:
        assert (male.lower(), female.lower()) in pairs, (male, female)


def test_usage_lines_show_what_a_command_accepts(run_cli):
    rc, out, _ = run_cli("federated", "--help")
    assert rc == 0 and out.startswith("usage: distill federated --config FILE") and "[--compare]" in out
    assert "[--KEY VALUE ...]" in out.splitlines()[0]
    rc, out, _ = run_cli("train", "--help")
    assert rc == 0 and "[--KEY VALUE ...]" in out
    rc, out, _ = run_cli("cache-teacher", "--help")
    assert rc == 0 and "[--KEY VALUE ...]" in out.splitlines()[0]


@pytest.mark.parametrize("argv, code", [(["counterfactual", "He thanked his sister."], 0),
                                        (["card", "--model", "no/such/dir"], 2)])
def test_every_command_ends_by_destroying_the_process_group(argv, code, capsys):
    """Under `accelerate launch` each process started torch.distributed's default group; a command that returns
    (or stops with a DistillError) destroys it before the interpreter shuts down, where gloo may abort."""
    import torch.distributed as dist

    from distill.cli import main

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert main(argv) == code
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_an_interrupted_command_leaves_the_process_group_alone(monkeypatch, capsys):
    """After Ctrl-C a collective may be cut short, and destroying the group would wait for it: left to the exit."""
    import torch.distributed as dist

    from distill.cli import main
    from distill.commands import counterfactual

    def interrupted(args, extra):
        raise KeyboardInterrupt

    monkeypatch.setattr(counterfactual, "run", interrupted)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert main(["counterfactual", "x"]) == 130
        assert dist.is_initialized()
        assert "interrupted" in capsys.readouterr().err
    finally:
        dist.destroy_process_group()
