import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


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


def test_train_tiny_config_end_to_end(tmp_path, capsys):
    """The shipped tiny config: builtin teacher created offline, student saved and loadable, perplexity improves.

    In-process (the builtin teacher's training dominates) and 12 steps instead of the config's 60."""
    from transformers import AutoModelForCausalLM

    from distill.cli import main

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


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, tiny_teacher_dir):
    """torchrun-style launch (accelerate's --multi_gpu) on CPU: use_cpu in the config selects gloo/MULTI_CPU."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distill", "train",
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
