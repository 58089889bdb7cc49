"""Bad inputs and faults a newcomer meets: each is one clear line on stderr, exit code 2, and nothing written."""

import hashlib
import json
import logging
import os
import shutil

import pytest
import torch

from distill.cli import main as cli_main
from distill.errors import DistillError


def _digest(path):
    out = {}
    for root, dirs, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), path)] = hashlib.sha256(fh.read()).hexdigest()
        out.update({os.path.relpath(os.path.join(root, d), path) + "/": "dir" for d in dirs})
    return out


def _fails(capsys, argv, *needles):
    """Run the CLI in-process; assert exit 2 and one stderr line holding every needle; return the line."""
    assert cli_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()
           and not line.startswith(("[transformers]", "WARNING", "Tokenizing", "Packing", "Generating"))]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory, tiny_teacher_dir):
    """Copies of the tiny teacher whose model.safetensors is empty, cut in half, or overwritten at the start."""
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for kind in ("zero", "truncated", "corrupt"):
        dst = root / kind
        shutil.copytree(tiny_teacher_dir, dst)
        weights = dst / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes({"zero": b"", "truncated": data[: len(data) // 2],
                             "corrupt": b"\xff" * 64 + data[64:]}[kind])
        out[kind] = str(dst)
    return out


# ---------------------------------------------------------------------------------------------------
# damaged weights, missing paths
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zero", "truncated", "corrupt"])
def test_damaged_weights_in_evaluate(damaged_models, tmp_path, capsys, kind):
    out = tmp_path / "report"
    _fails(capsys, ["evaluate", "--model", damaged_models[kind], "--output_dir", str(out), "--occupations", "nurse",
                    "--metrics", "cooccurrence"], "damaged", damaged_models[kind])
    assert not out.exists()


def test_damaged_teacher_in_train(damaged_models, tmp_path, capsys):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--teacher_model_name_or_path", damaged_models["truncated"], "--output_dir", str(out),
                    "--dataset_name", "builtin:tiny", "--max_train_samples", "50", "--block_size", "32",
                    "--use_cpu", "true", "--report_to", "none"], "damaged")
    assert not out.exists()


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/model", "runs/a/b"])
def test_missing_local_model_path_says_so(tmp_path, capsys, path):
    line = _fails(capsys, ["evaluate", "--model", path, "--output_dir", str(tmp_path / "r")], "does not exist", path)
    assert "Repo id" not in line


# ---------------------------------------------------------------------------------------------------
# data and prompt files
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,content,needle", [
    ("empty.txt", b"", "is empty"),
    ("latin.txt", "caf\u00e9 au lait\n".encode("latin-1"), "not UTF-8"),
    ("binary.txt", bytes(range(128, 256)) * 8, "not UTF-8"),
    ("latin.jsonl", '{"text": "caf\u00e9"}\n'.encode("latin-1"), "not UTF-8"),
    ("blank.txt", b"\n \n\n", "holds no text"),
    ("bad.parquet", b"not a parquet file at all", "could not be read as parquet"),
])
def test_bad_train_files(tmp_path, name, content, needle):
    from distill.text_data import load_raw_datasets
    from distill.errors import ConfigError

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=needle) as info:
        load_raw_datasets(train_file=str(path))
    assert len(str(info.value).splitlines()) == 1 and name in str(info.value)


def test_bad_train_file_in_cli_writes_nothing(tiny_teacher_dir, tmp_path, capsys):
    data = tmp_path / "latin.txt"
    data.write_bytes("Die \u00c4rztin sagte\n".encode("latin-1"))
    out = tmp_path / "run"
    _fails(capsys, ["train", "--teacher_model_name_or_path", tiny_teacher_dir, "--train_file", str(data),
                    "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none"], "not UTF-8", "iconv")
    assert not out.exists()


def test_latin1_prompt_file(tiny_teacher_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("The caf\u00e9 owner said that\n".encode("latin-1"))
    _fails(capsys, ["evaluate", "--model", tiny_teacher_dir, "--prompts", str(prompts), "--output_dir",
                    str(tmp_path / "r")], "not UTF-8")
    assert not (tmp_path / "r").exists()


def test_bold_wikipedia_sentences_are_not_prompts(tmp_path):
    from distill.fairness.prompts import load_prompts

    wiki = {"American_actors": {"Jacob_Zachar": ["Jacob Zachar is an American actor whose roles include Russell.",
                                                 "He was born in 1986."]},
            "American_actresses": {"Ann_Doe": ["Ann Doe is an American actress.", "She won an award in 2001."]}}
    for name in ("gender_wiki.json", "sentences.json"):  # by its BOLD name, or by its content
        path = tmp_path / name
        path.write_text(json.dumps(wiki))
        with pytest.raises(DistillError, match="whole sentences"):
            load_prompts("bold:" + str(path))


# ---------------------------------------------------------------------------------------------------
# output paths are checked before any work
# ---------------------------------------------------------------------------------------------------
def test_outputs_that_are_files_fail_first(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    # the model does not exist either: the output error comes first, so nothing was loaded or evaluated
    _fails(capsys, ["evaluate", "--model", "./no/model", "--output_dir", str(afile)], "--output_dir", "existing file")
    _fails(capsys, ["train", "--output_dir", str(afile), "--dataset_name", "builtin:tiny"], "--output_dir",
           "existing file")
    _fails(capsys, ["demo", "--output_dir", str(afile)], "--output_dir", "existing file")
    _fails(capsys, ["tiny-teacher", "--output-dir", str(afile / "below")], "--output_dir", "is a file")
    _fails(capsys, ["audit", "--model", "./no/model", "--canary-seed", "1", "--output_dir", str(afile)],
           "--output_dir", "existing file")
    assert afile.read_text() == "keep me"


def test_device_cuda_without_cuda(tiny_teacher_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _fails(capsys, ["evaluate", "--model", tiny_teacher_dir, "--device", "cuda", "--output_dir", str(tmp_path / "r")],
           "--device cuda", "CUDA is not available")
    _fails(capsys, ["evaluate", "--model", tiny_teacher_dir, "--device", "gpu0", "--output_dir", str(tmp_path / "r")],
           "not a device")


def test_evaluate_does_not_mix_runs(tiny_teacher_dir, tmp_path, capsys):
    out = tmp_path / "report"
    common = ["evaluate", "--model", tiny_teacher_dir, "--occupations", "nurse,plumber", "--quiet", "--no-plot",
              "--output_dir", str(out), "--max-new-tokens", "3", "--max-prompts-per-group", "2", "--greedy"]
    assert cli_main(common + ["--metrics", "cooccurrence,parity"]) == 0
    first = _digest(out)
    assert "generations.jsonl" in first
    settings = json.loads((out / "fairness.json").read_text())["settings"]
    assert settings["max_prompts_per_group"] == 2
    capsys.readouterr()
    # a second run into the same directory is refused, and the first report is untouched
    _fails(capsys, common + ["--metrics", "cooccurrence"], "already holds a report", "--overwrite")
    assert _digest(out) == first
    # with --overwrite the new report replaces the old one entirely (no stale generations.jsonl)
    assert cli_main(common + ["--metrics", "cooccurrence", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["fairness.json", "per_profession.csv"]


def test_every_evaluate_output_is_a_known_report_file(tiny_teacher_dir, tmp_path):
    from distill.outputs import FAIRNESS_REPORT_FILES

    out = tmp_path / "all"
    assert cli_main(["evaluate", "--model", tiny_teacher_dir, "--occupations", "nurse", "--quiet", "--greedy",
                     "--max-new-tokens", "2", "--max-prompts-per-group", "1", "--output_dir", str(out)]) == 0
    assert set(os.listdir(out)) == set(FAIRNESS_REPORT_FILES)  # so --overwrite can clear every one of them


# ---------------------------------------------------------------------------------------------------
# hints name the option the way the running command takes it
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pickle_only(tmp_path_factory):
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("pickle") / "m"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(path)
    weights = load_file(str(path / "model.safetensors"))
    os.remove(path / "model.safetensors")
    torch.save(weights, path / "pytorch_model.bin")
    return str(path)


def test_pickle_hint_uses_each_commands_spelling(pickle_only, tmp_path, capsys):
    from distill.model_loading import load_causal_lm

    line = _fails(capsys, ["evaluate", "--model", pickle_only, "--output_dir", str(tmp_path / "r")], "pass --allow-pickle ")
    assert "--allow_pickle true" not in line
    _fails(capsys, ["audit", "--model", pickle_only, "--canary-seed", "1"], "pass --allow-pickle ")
    _fails(capsys, ["train", "--teacher_model_name_or_path", pickle_only, "--output_dir", str(tmp_path / "t"),
                    "--dataset_name", "builtin:tiny", "--max_train_samples", "20", "--block_size", "8",
                    "--use_cpu", "true", "--report_to", "none"], "pass --allow_pickle true")
    with pytest.raises(DistillError, match="allow_pickle=True"):  # Python callers get the keyword
        load_causal_lm(pickle_only)


def test_both_spellings_of_every_option():
    from distill.cli import build_parser

    parser, _ = build_parser()
    a = parser.parse_args(["evaluate", "--model", "m", "--max_new_tokens", "3", "--allow_pickle", "--output_dir", "o"])
    b = parser.parse_args(["evaluate", "--model", "m", "--max-new-tokens", "3", "--allow-pickle", "--output_dir", "o"])
    assert vars(a) == vars(b) and a.max_new_tokens == 3 and a.allow_pickle
    assert parser.parse_args(["push", "--model", "d", "--repo_id", "x/y"]).repo_id == "x/y"
    assert parser.parse_args(["tiny-teacher", "--output-dir", "t"]).output_dir == "t"


def test_command_list_is_explicit_and_complete():
    import pkgutil

    import distill.commands
    from distill.cli import COMMANDS, build_parser

    modules = {m.name for m in pkgutil.iter_modules(distill.commands.__path__) if not m.name.startswith("_")}
    assert set(COMMANDS) == modules  # a new command module must be listed in distill.cli.COMMANDS
    _, found = build_parser()
    assert len(found) == len(COMMANDS)


# ---------------------------------------------------------------------------------------------------
# checkpoints: an interrupted save is skipped, a finished run is not "resumed"
# ---------------------------------------------------------------------------------------------------
def _fake_checkpoint(root, step, state=True, marker=False, text=None):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state:
        (path / "trainer_state.json").write_text(text or json.dumps({"global_step": step, "max_steps": 10}))
    if marker:
        (path / ".complete").write_text("{}")
    return str(path)


def test_last_complete_checkpoint_skips_incomplete_ones(tmp_path, caplog):
    from distill.distillation.checkpoints import last_complete_checkpoint

    legacy = tmp_path / "legacy"  # checkpoints without markers (a plain Trainer): a valid trainer_state.json
    good = _fake_checkpoint(legacy, 2)
    _fake_checkpoint(legacy, 4, text='{"global_step": 4, "max')  # cut short
    _fake_checkpoint(legacy, 6, state=False)  # empty
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(str(legacy)) == good
    assert "checkpoint-6" in caplog.text and "checkpoint-4" in caplog.text
    marked = tmp_path / "marked"  # a run that writes markers: a missing marker means an interrupted save
    good = _fake_checkpoint(marked, 2, marker=True)
    _fake_checkpoint(marked, 4)
    assert last_complete_checkpoint(str(marked)) == good
    assert last_complete_checkpoint(str(tmp_path / "none")) is None


def test_resume_skips_an_interrupted_checkpoint_and_refuses_a_finished_run(tiny_args, tmp_path, capsys, caplog):
    from distill.errors import ConfigError
    from distill.distillation.train import run_training

    out = tmp_path / "run"
    kw = dict(output_dir=str(out), max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="no",
              validation_split_percentage=0)
    run_training(tiny_args(**kw))
    assert (out / "checkpoint-4" / ".complete").is_file() and (out / "checkpoint-2" / ".complete").is_file()
    # a kill while checkpoint-4 was being saved: its state and marker were never written
    os.remove(out / "checkpoint-4" / "trainer_state.json")
    os.remove(out / "checkpoint-4" / ".complete")
    resume = tiny_args(**kw, resume_from_checkpoint="latest")
    with caplog.at_level(logging.WARNING):
        trainer = run_training(resume)
    assert "Skipping" in caplog.text and "checkpoint-4" in caplog.text
    assert trainer.state.global_step == 4
    assert (out / "checkpoint-4" / ".complete").is_file()  # saved again, whole this time
    # now the run is finished: resuming it again changes nothing and says so
    before = _digest(out)
    with pytest.raises(ConfigError, match="finished run"):
        run_training(resume)
    assert _digest(out) == before


# ---------------------------------------------------------------------------------------------------
# refused before any work: DeepSpeed, tiny-teacher sizes, numeric ranges, model names, refused runs
# ---------------------------------------------------------------------------------------------------
TINY_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.yaml")


def test_deepspeed_settings_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    out = tmp_path / "run"
    base = ["train", "--config", TINY_YAML, "--output_dir", str(out), "--deepspeed"]
    _fails(capsys, base + ['{"zero_optimization":{"stage":3}}'], "ZeRO stage 3", "ZeRO stage 1 or 2")
    _fails(capsys, base + ['{"zero_optimization":{"stage":7}}'], "unknown ZeRO stage (7)")
    _fails(capsys, base + [str(tmp_path / "nothere.json")], "nothere.json", "neither a DeepSpeed JSON file")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    _fails(capsys, base + ['{"zero_optimization":{"stage":2}}'], "DeepSpeed is not installed", "pip install deepspeed")
    assert not out.exists()


def test_tiny_teacher_sizes_are_checked_first(tmp_path, capsys):
    out = tmp_path / "t"
    _fails(capsys, ["tiny-teacher", "--n_embd", "30", "--n_head", "4", "--output_dir", str(out)],
           "--n_embd 30", "--n_head 4", "--n_embd 32")
    with pytest.raises(SystemExit) as info:
        cli_main(["tiny-teacher", "--n_layer", "0", "--output_dir", str(out)])
    assert info.value.code == 2 and "--n_layer" in capsys.readouterr().err
    assert not out.exists()


def _parse_error(capsys, parser, argv) -> str:
    with pytest.raises(SystemExit) as info:
        parser.parse_known_args(argv)
    assert info.value.code == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in __import__("distill.cli").cli.COMMANDS])
def test_every_numeric_option_has_a_range_and_refuses_values_outside_it(command, capsys):
    from distill.cli import build_parser, number

    parser, _ = build_parser()
    sub = parser.command_parsers[command]
    numeric = [a for a in sub._actions if a.type in (int, float) or isinstance(a.type, number)]
    undeclared = [a.option_strings[0] for a in numeric if not isinstance(a.type, number)]
    assert not undeclared, f"{command}: give these options a range with distill.cli.number: {undeclared}"
    for action in numeric:
        kind = action.type
        option = action.option_strings[0]
        line = _parse_error(capsys, sub, [option, "abc"])
        assert option in line and "invalid" in line
        for bad in ([kind.min - 1, kind.min] if kind.min_open else [kind.min - 1]) if kind.min is not None else []:
            line = _parse_error(capsys, sub, [option, str(kind.kind(bad))])
            assert option in line and kind.describe() in line, line
        if kind.max is not None:
            line = _parse_error(capsys, sub, [option, str(kind.max * 5 + 1)])
            assert option in line and kind.describe() in line, line
        if kind.kind is float:
            assert "finite" in _parse_error(capsys, sub, [option, "nan"])


def test_evaluate_sampling_values_are_refused_before_loading(capsys):
    # the model does not exist: the option error comes first
    for argv, needle in ((["--ceat-samples", "0"], "--ceat-samples"), (["--temperature", "0"], "--temperature"),
                         (["--top-p", "5"], "--top-p"), (["--top-p", "0"], "--top-p"), (["--top-k", "-1"], "--top-k"),
                         (["--num-samples", "0"], "--num-samples"), (["--max-new-tokens", "0"], "--max-new-tokens")):
        with pytest.raises(SystemExit):
            cli_main(["evaluate", "--model", "./no/model"] + argv)
        err = capsys.readouterr().err
        assert needle in err and "does not exist" not in err, err
        assert needle != "--ceat-samples" or "num_samples" not in err, err


@pytest.fixture
def no_network(monkeypatch):
    """Online mode (no offline variable set) on a machine whose network does not answer."""
    from huggingface_hub import constants
    import huggingface_hub.utils

    from distill import model_loading

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_loading, "_REACHABLE", {})
    calls = []

    class NoNetwork:
        def head(self, url, timeout=None):
            calls.append((url, timeout))
            raise ConnectionError("simulated: no route to host")

    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: NoNetwork())
    return calls


def test_hub_names_without_network_say_what_was_tried(no_network, tmp_path, capsys, monkeypatch):
    line = _fails(capsys, ["evaluate", "--model", "nobody-xyz/no-such-model", "--output_dir", str(tmp_path / "r")],
                  "nobody-xyz/no-such-model", "not a local directory", "not in the Hugging Face cache",
                  "could not be reached", "simulated: no route to host")
    assert "HF_HUB_OFFLINE" not in line
    assert len(no_network) == 1 and no_network[0][1] <= 5  # one quick check, not a retried download
    # a name under an existing local directory is a local path that does not exist, at once
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    line = _fails(capsys, ["evaluate", "--model", "runs/nothere", "--output_dir", str(tmp_path / "r")],
                  "'runs/nothere' does not exist")
    assert "HF_HUB_OFFLINE" not in line and "Hub could not" not in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_is_named_only_when_set(no_network, tmp_path, capsys, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    _fails(capsys, ["evaluate", "--model", "nobody-xyz/no-such-model", "--output_dir", str(tmp_path / "r")],
           f"{variable} is set", "not in the Hugging Face cache")
    assert no_network == []  # offline: the Hub is not even tried


def test_train_without_config_or_data_says_give_config(tmp_path, capsys):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--output_dir", str(out)], "give --config FILE")
    assert not out.exists()


def test_dp_checkpoint_without_privacy_state(tmp_path):
    from types import SimpleNamespace

    from distill.errors import ConfigError
    from distill.outputs import PRIVACY_STATE_FILENAME
    from distill.privacy.engine import DPSGDEngine

    good = _fake_checkpoint(tmp_path / "dp", 2, marker=True)
    with open(os.path.join(good, PRIVACY_STATE_FILENAME), "w") as fh:
        json.dump({"history": []}, fh)
    cut = _fake_checkpoint(tmp_path / "dp", 4)  # its save was cut before the privacy state
    with pytest.raises(ConfigError, match="is incomplete: its privacy state") as info:
        DPSGDEngine.load_resume_state(SimpleNamespace(), cut, str(tmp_path / "dp"))
    assert "earlier complete checkpoint" in str(info.value) and "without dp_enabled" not in str(info.value)
    alone = _fake_checkpoint(tmp_path / "plain", 2, marker=True)  # no sibling tells: both causes are named
    with pytest.raises(ConfigError, match="cut short .* without DP"):
        DPSGDEngine.load_resume_state(SimpleNamespace(), alone, str(tmp_path / "plain"))


@pytest.mark.parametrize("settings,needle", [
    (dict(dp_enabled=True, packing=False, dp_noise_multiplier=1.0, dp_delta=0.5), "1/N"),
    (dict(teacher_cache="/no/such/cache", alpha_cos=0.0), "teacher_cache"),
])
def test_refused_runs_leave_no_output_directory(tiny_args, tmp_path, settings, needle):
    from distill.distillation.train import run_training

    args = tiny_args(output_dir=str(tmp_path / "new" / "run"), **settings)
    with pytest.raises(DistillError, match=needle):
        run_training(args)
    assert not (tmp_path / "new").exists()


def test_overwrite_removes_earlier_reports_and_the_card_reads_only_this_runs(tiny_args, tmp_path, caplog):
    from distill.distillation.train import run_training
    from distill.hub.run_info import read_run
    from distill.outputs import RUN_ID_FILENAME, RUN_REPORT_FILES, read_run_id

    out = tmp_path / "run"
    args = tiny_args(output_dir=str(out), eval_strategy="no", validation_split_percentage=0)
    run_training(args)
    first = read_run_id(str(out))
    assert first and len(first) == 32
    stale = {"cooccurrence_bias_mean_abs": 0.987654, "run_id": "an-earlier-federated-run"}
    for name in ("fairness.json", "fl_report.json", "privacy.json", "audit.json", "fl_rounds.png"):
        (out / name).write_text(json.dumps(stale))
    run_training(tiny_args(output_dir=str(out), eval_strategy="no", validation_split_percentage=0,
                           overwrite_output_dir=True))
    second = read_run_id(str(out))
    assert second and second != first
    left = set(os.listdir(out)) & set(RUN_REPORT_FILES)
    assert left <= {RUN_ID_FILENAME, "all_results.json"}, left
    assert "0.987654" not in (out / "README.md").read_text()
    # a report of another run (or of no identified run) beside this run's files is not this run's
    for body in (stale, {"cooccurrence_bias_mean_abs": 0.987654}):
        (out / "fairness.json").write_text(json.dumps(body))
        with caplog.at_level(logging.WARNING):
            assert read_run(str(out)).fairness is None
        assert "Ignoring" in caplog.text and "fairness.json" in caplog.text
        caplog.clear()
    (out / "fairness.json").write_text(json.dumps({**stale, "run_id": second}))
    assert read_run(str(out)).fairness["cooccurrence_bias_mean_abs"] == 0.987654
    # `distill evaluate` of the model directory stamps its run id: the card accepts that report
    os.remove(out / "fairness.json")
    assert cli_main(["evaluate", "--model", str(out), "--output_dir", str(out), "--occupations", "nurse", "--quiet",
                     "--greedy", "--no-plot", "--max-new-tokens", "2", "--max-prompts-per-group", "1",
                     "--metrics", "cooccurrence"]) == 0
    assert json.loads((out / "fairness.json").read_text())["run_id"] == second
    assert read_run(str(out)).fairness is not None
