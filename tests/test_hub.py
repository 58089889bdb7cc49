"""Model card and `distill push`: the card after training, the model-index, safe failures, what is uploaded."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

from conftest import REPO
from distill.cli import main as cli_main
from distill.outputs import read_run_id
from distill.distillation.config import DistillationConfig
from distill.errors import DistillError
from distill.hub import push as push_mod
from distill.hub.card import GENERATED_MARKER, write_model_card
from distill.distillation.train import run_training

REPO_ID = "me/tiny-student"
TOKEN = "hf_secret_test_token"

FAIRNESS = {  # the fairness report contract (distill evaluate -> OUTPUT_DIR/fairness.json)
    "model": "tiny-student", "mean_parity": 0.42, "min_parity": 0.05, "cooccurrence_bias_mean_abs": 1.234,
    "sentiment_gap": 0.031,
    "per_profession": [
        {"profession": "nurse", "parity": 0.1, "cooccurrence_bias": 2.5, "male": 1, "female": 10},
        {"profession": "engineer", "parity": None, "cooccurrence_bias": -1.75, "male": 6, "female": 0},
        {"profession": "teacher", "parity": 0.9, "cooccurrence_bias": 0.125, "male": 5, "female": 4},
    ],
}
PRIVACY = {"epsilon": 7.93, "delta": 1e-5, "noise_multiplier": 0.9, "max_grad_norm": 1.0, "sample_rate": 0.01,
           "steps": 3, "accountant": "rdp", "mode": "fast"}


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records calls and the files upload_folder would send."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None, **kw):
        FakeHfApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kw):
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        if FakeHfApi.fail_with is not None:
            raise FakeHfApi.fail_with
        from huggingface_hub.hf_api import RepoUrl

        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kw):
        FakeHfApi.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def upload_folder(self, *, folder_path, allow_patterns=None, ignore_patterns=None, **kw):
        paths = sorted(os.path.relpath(os.path.join(root, f), folder_path).replace(os.sep, "/")
                       for root, _, files in os.walk(folder_path) for f in files)
        sent = list(filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        FakeHfApi.calls.append(("upload_folder", {"files": sent, **kw}))
        return "https://huggingface.co/me/tiny-student/commit/0123"

    @classmethod
    def uploads(cls):
        return [c for name, c in cls.calls if name == "upload_folder"]


@pytest.fixture
def fake_hub(monkeypatch):
    """Online, with a token, and HfApi replaced by FakeHfApi."""
    from huggingface_hub import constants

    FakeHfApi.calls = []
    FakeHfApi.fail_with = None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(push_mod, "HfApi", FakeHfApi)
    monkeypatch.setattr(push_mod, "get_token", lambda: None)  # no saved login: tokens come from flags/config
    return FakeHfApi


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_teacher_dir):
    """One tiny `distill train` run with checkpoints and push_to_hub: true, against FakeHfApi."""
    from huggingface_hub import constants

    out = tmp_path_factory.mktemp("hub") / "tiny-student"
    args = DistillationConfig(
        output_dir=str(out), teacher_model_name_or_path=tiny_teacher_dir, student_num_layers=2,
        dataset_name="builtin:tiny", block_size=32, max_train_samples=100, max_eval_samples=4,
        per_device_train_batch_size=2, per_device_eval_batch_size=8, max_steps=3, learning_rate=1e-3,
        logging_steps=1, report_to="none", eval_strategy="no", save_strategy="steps", save_steps=2,
        use_cpu=True, seed=0, disable_tqdm=True, validation_split_percentage=10,
        push_to_hub=True, hub_model_id=REPO_ID, hub_token=TOKEN, hub_private_repo=True)
    FakeHfApi.calls = []
    FakeHfApi.fail_with = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "0")
        mp.delenv("TRANSFORMERS_OFFLINE", raising=False)
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(push_mod, "HfApi", FakeHfApi)
        mp.setattr(push_mod, "get_token", lambda: None)
        run_training(args)
    return str(out), list(FakeHfApi.calls)


def _tree_digest(path):
    """sha256 of every file (relative path -> digest), sub-folders included."""
    out = {}
    for root, dirs, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
        out.update({os.path.relpath(os.path.join(root, d), path) + "/": "dir" for d in dirs})
    return out


def _copy(src, tmp_path, name="model"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return str(dst)


def _metrics(card):
    return {r.metric_type: r for r in card.data.eval_results or []}


# ---------------------------------------------------------------------------------------------------
# the card written by training
# ---------------------------------------------------------------------------------------------------
def test_training_writes_a_card_that_parses_with_hub_metadata(trained):
    out, _ = trained
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert GENERATED_MARKER in card.text
    data = card.data
    assert data.library_name == "transformers"
    assert {"fairness", "knowledge-distillation", "fair-distill"} <= set(data.tags)
    assert "differential-privacy" not in data.tags  # DP was off
    assert data.base_model is None  # a local teacher directory is not a Hub id
    assert data.model_name == "tiny-student"
    with open(os.path.join(out, "all_results.json")) as fh:
        ppl = json.load(fh)["eval_perplexity"]
    metrics = _metrics(card)
    assert metrics["perplexity"].metric_value == pytest.approx(ppl, rel=1e-6)
    assert not {"epsilon", "cooccurrence_bias_mean_abs"} & set(metrics)
    assert "No fairness results were computed" in card.text and "distill evaluate --model" in card.text
    assert "**not** trained with differential privacy" in card.text
    assert "copies of teacher blocks 0, 3" in card.text  # student architecture from config.json
    assert "**binary**" in card.text and "**English only**" in card.text
    assert f'from_pretrained("{REPO_ID}")' in card.text
    assert TOKEN not in open(os.path.join(out, "distill_config.yaml")).read()  # never saved, never uploaded


def test_training_records_every_fair_distill_key_for_the_card(trained):
    import dataclasses

    import yaml
    from transformers import TrainingArguments

    out, _ = trained
    with open(os.path.join(out, "distill_config.yaml")) as fh:
        saved = yaml.safe_load(fh)
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = {f.name for f in dataclasses.fields(DistillationConfig) if f.init and f.name not in inherited}
    assert own <= set(saved)  # defaults included: the card reads them from the file, not from the code
    assert saved["temperature"] == DistillationConfig().temperature and saved["cda"] == "none"
    assert saved["learning_rate"] == 1e-3 and saved["gradient_accumulation_steps"] == 1  # the run's Trainer keys
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert f"T = {DistillationConfig().temperature:.4g}" in card.text


def test_card_of_an_older_run_shows_unrecorded_keys_as_unknown(trained, tmp_path):
    """Before every key was saved, distill_config.yaml held only the non-default ones: the rest are unknown."""
    model = _copy(trained[0], tmp_path)
    with open(os.path.join(model, "distill_config.yaml"), "w") as fh:
        fh.write("output_dir: somewhere\ndataset_name: builtin:tiny\nlearning_rate: 0.001\n")
    write_model_card(model)
    card = ModelCard.load(os.path.join(model, "README.md"))
    assert "T = n/a" in card.text  # not today's default temperature
    assert "counterfactual-role-reversal" not in card.data.tags  # cda / perturbation unknown: no claim
    assert "an unknown teacher" in card.text  # not the default teacher's name


def test_card_reports_fairness_and_privacy_in_model_index(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    for name, payload in (("fairness.json", FAIRNESS), ("privacy.json", PRIVACY)):
        with open(os.path.join(model, name), "w") as fh:  # reports of this run carry its id
            json.dump({**payload, "run_id": read_run_id(model)}, fh)
    open(os.path.join(model, "disparity.png"), "wb").write(b"\x89PNG\r\n\x1a\n")
    assert write_model_card(model) is not None  # replaces the card written by training
    card = ModelCard.load(os.path.join(model, "README.md"))
    metrics = _metrics(card)
    assert metrics["cooccurrence_bias_mean_abs"].metric_value == pytest.approx(1.234)
    assert metrics["mean_parity"].metric_value == pytest.approx(0.42)
    assert metrics["epsilon"].metric_value == pytest.approx(7.93)
    assert metrics["epsilon"].metric_args["delta"] == pytest.approx(1e-5)
    assert "perplexity" in metrics
    assert "differential-privacy" in card.data.tags
    assert "(ε, δ) = (7.93, 1e-05)" in card.text
    assert "| nurse | 0.1 | 2.5 | 1 | 10 |" in card.text  # most skewed profession first
    assert card.text.index("| nurse") < card.text.index("| engineer") < card.text.index("| teacher")
    assert "| engineer | n/a |" in card.text  # undefined parity is not shown as a number
    assert "![Gender disparity per profession](disparity.png)" in card.text
    assert "No fairness results" not in card.text


def test_card_falls_back_to_callback_logs(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    state_path = os.path.join(model, "trainer_state.json")
    with open(state_path) as fh:
        state = json.load(fh)
    state["log_history"] += [{"step": 2, "fairness/cooccurrence_bias_mean_abs": 0.9, "dp/epsilon": 2.0},
                             {"step": 3, "fairness/cooccurrence_bias_mean_abs": 0.7, "dp/epsilon": 3.0}]
    with open(state_path, "w") as fh:
        json.dump(state, fh)
    write_model_card(model)
    card = ModelCard.load(os.path.join(model, "README.md"))
    metrics = _metrics(card)
    assert metrics["cooccurrence_bias_mean_abs"].metric_value == pytest.approx(0.7)  # the latest value
    assert metrics["epsilon"].metric_value == pytest.approx(3.0)
    assert "fairness callback during training (step 3)" in card.text


def test_a_readme_written_by_someone_else_is_kept(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    path = os.path.join(model, "README.md")
    with open(path, "w") as fh:
        fh.write("# my own card\n")
    assert write_model_card(model) is None
    assert open(path).read() == "# my own card\n"
    assert cli_main(["card", "--model", model]) == 2
    assert cli_main(["card", "--model", model, "--force"]) == 0
    assert GENERATED_MARKER in open(path).read()


# ---------------------------------------------------------------------------------------------------
# push at the end of training
# ---------------------------------------------------------------------------------------------------
def test_push_to_hub_in_training_pushes_once_with_card_and_no_checkpoints(trained):
    out, calls = trained
    assert any(d.startswith("checkpoint-") for d in os.listdir(out))  # checkpoints were saved ...
    uploads = [c for name, c in calls if name == "upload_folder"]
    assert len(uploads) == 1  # ... but neither pushed on save nor at start-up
    files = uploads[0]["files"]
    assert not [f for f in files if "/" in f or f.startswith("checkpoint")]
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json", "distill_config.yaml"} <= set(files)
    assert uploads[0]["repo_id"] == REPO_ID and uploads[0]["commit_message"] == "End of training"
    create = [c for name, c in calls if name == "create_repo"]
    assert len(create) == 1 and create[0]["private"] is True and create[0]["exist_ok"] is True
    assert [c for name, c in calls if name == "init"] == [{"token": TOKEN}]


def test_push_to_hub_in_training_fails_before_training_when_offline(tiny_args, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = tiny_args(push_to_hub=True, hub_model_id=REPO_ID, hub_token=TOKEN)
    with pytest.raises(DistillError, match="offline"):
        run_training(args)
    assert not os.path.exists(args.output_dir)  # nothing was trained or written


# ---------------------------------------------------------------------------------------------------
# distill push: failures are safe
# ---------------------------------------------------------------------------------------------------
def test_cli_push_offline_exits_2_and_leaves_dir_byte_identical(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    before = _tree_digest(model)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "distill", "push", "--model", model, "--repo-id", "x/y"],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "offline" in lines[0] and "HF_HUB_OFFLINE" in lines[0], proc.stderr
    assert _tree_digest(model) == before


@pytest.mark.parametrize("with_card", [True, False])
def test_push_without_token_changes_nothing(trained, tmp_path, fake_hub, capsys, with_card):
    model = _copy(trained[0], tmp_path)
    if not with_card:
        os.remove(os.path.join(model, "README.md"))
    before = _tree_digest(model)
    assert cli_main(["push", "--model", model, "--repo-id", "x/y"]) == 2
    err = capsys.readouterr().err
    assert "no Hugging Face token" in err and "--token" in err
    assert _tree_digest(model) == before  # the card is not even generated when the push cannot start
    assert fake_hub.calls == []


@pytest.mark.parametrize("with_card", [True, False])
def test_push_repo_error_exits_2_and_leaves_dir_byte_identical(trained, tmp_path, fake_hub, capsys, with_card):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    model = _copy(trained[0], tmp_path)
    if not with_card:  # the card a push generates is not written into DIR before the upload succeeded
        os.remove(os.path.join(model, "README.md"))
    before = _tree_digest(model)
    response = httpx2.Response(403, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    fake_hub.fail_with = HfHubHTTPError("403 Forbidden: you cannot write to x/y", response=response)
    assert cli_main(["push", "--model", model, "--repo-id", "x/y", "--token", TOKEN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "403 Forbidden" in err and "write access" in err
    assert "was not changed" in err and TOKEN not in err
    assert _tree_digest(model) == before
    assert fake_hub.uploads() == []


def test_push_refuses_pickle_only_weights(tmp_path, fake_hub, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = tmp_path / "pickled"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(model)
    from safetensors.torch import load_file

    weights = load_file(str(model / "model.safetensors"))
    os.remove(model / "model.safetensors")
    torch.save(weights, model / "pytorch_model.bin")
    before = _tree_digest(str(model))
    assert cli_main(["push", "--model", str(model), "--repo-id", "x/y", "--token", TOKEN]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "--allow-pickle" in err and "execute code" in err
    assert _tree_digest(str(model)) == before and fake_hub.calls == []
    # the user may opt in: then the pickle weights are the ones uploaded
    assert cli_main(["push", "--model", str(model), "--repo-id", "x/y", "--token", TOKEN, "--allow-pickle"]) == 0
    assert "pytorch_model.bin" in fake_hub.uploads()[0]["files"]


def test_push_rejects_a_directory_that_is_not_a_model(tmp_path, fake_hub, capsys):
    assert cli_main(["push", "--model", str(tmp_path), "--repo-id", "x/y", "--token", TOKEN]) == 2
    assert "no config.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# distill push: what a successful push uploads
# ---------------------------------------------------------------------------------------------------
def test_push_uploads_model_tokenizer_card_and_reports_only(trained, tmp_path, fake_hub, capsys):
    model = _copy(trained[0], tmp_path)
    os.remove(os.path.join(model, "README.md"))  # push regenerates a missing card before uploading
    with open(os.path.join(model, "fairness.json"), "w") as fh:
        json.dump({**FAIRNESS, "run_id": read_run_id(model)}, fh)
    with open(os.path.join(model, "privacy.json"), "w") as fh:
        json.dump({**PRIVACY, "run_id": read_run_id(model)}, fh)
    for name, data in (("per_profession.csv", b"profession,parity\nnurse,0.1\n"), ("disparity.png", b"\x89PNG"),
                       ("optimizer.pt", b"x"), ("training_args.bin", b"x"), ("train.csv", b"secret,data\n"),
                       (".env", b"HF_TOKEN=x")):
        open(os.path.join(model, name), "wb").write(data)
    rc = cli_main(["push", "--model", model, "--repo-id", REPO_ID, "--token", TOKEN, "--private",
                   "--revision", "v1", "--commit-message", "first"])
    assert rc == 0
    out = capsys.readouterr().out
    assert REPO_ID in out and TOKEN not in out
    (upload,) = fake_hub.uploads()
    files = set(upload["files"])
    expected = {"README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "distill_config.yaml", "fairness.json", "per_profession.csv",
                "disparity.png", "privacy.json", "run_id"}
    assert expected <= files
    assert not files & {"all_results.json", "trainer_state.json"}  # DP (privacy.json): outside epsilon
    assert not [f for f in files if "/" in f or f.startswith("checkpoint")]
    assert not files & {"optimizer.pt", "training_args.bin", "train.csv", ".env"}
    assert upload["revision"] == "v1" and upload["commit_message"] == "first" and upload["repo_id"] == REPO_ID
    calls = dict((name, c) for name, c in fake_hub.calls)
    assert calls["init"] == {"token": TOKEN}
    assert calls["create_repo"]["private"] is True and calls["create_repo"]["exist_ok"] is True
    assert calls["create_branch"]["branch"] == "v1" and calls["create_branch"]["exist_ok"] is True
    card = ModelCard.load(os.path.join(model, "README.md"))  # the regenerated card has the reports
    assert {"cooccurrence_bias_mean_abs", "epsilon", "perplexity"} <= set(_metrics(card))
    assert f'from_pretrained("{REPO_ID}")' in card.text


def test_a_card_someone_wrote_is_pushed_as_is(trained, tmp_path, fake_hub):
    model = _copy(trained[0], tmp_path)
    with open(os.path.join(model, "README.md"), "w") as fh:
        fh.write("# my own card\n")
    before = _tree_digest(model)
    assert cli_main(["push", "--model", model, "--repo-id", "x/y", "--token", TOKEN]) == 0
    assert _tree_digest(model) == before  # a push never rewrites the card or anything else
    assert "README.md" in fake_hub.uploads()[0]["files"]


# ---------------------------------------------------------------------------------------------------
# the card follows the evaluation; DP pushes leave out what epsilon does not cover
# ---------------------------------------------------------------------------------------------------
def test_evaluate_into_the_model_dir_refreshes_the_card(trained, tmp_path, capsys):
    model = _copy(trained[0], tmp_path)
    assert "No fairness results were computed" in open(os.path.join(model, "README.md")).read()
    rc = cli_main(["evaluate", "--model", model, "--output_dir", model, "--occupations", "nurse,plumber",
                   "--max-prompts-per-group", "1", "--max-new-tokens", "4", "--no-plot", "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    card = ModelCard.load(os.path.join(model, "README.md"))
    assert "No fairness results were computed" not in card.text
    assert "Measured by `distill evaluate` (`fairness.json`)" in card.text
    assert "cooccurrence_bias_mean_abs" in _metrics(card)
    # a README.md the user wrote is kept
    with open(os.path.join(model, "README.md"), "w") as fh:
        fh.write("# mine\n")
    rc = cli_main(["evaluate", "--model", model, "--output_dir", model, "--occupations", "nurse", "--overwrite",
                   "--max-prompts-per-group", "1", "--max-new-tokens", "4", "--no-plot", "--quiet", "--device", "cpu"])
    assert rc == 0 and open(os.path.join(model, "README.md")).read() == "# mine\n"


def test_push_refreshes_a_generated_card_with_the_reports(trained, tmp_path, fake_hub):
    model = _copy(trained[0], tmp_path)
    with open(os.path.join(model, "fairness.json"), "w") as fh:
        json.dump({**FAIRNESS, "run_id": read_run_id(model)}, fh)
    assert cli_main(["push", "--model", model, "--repo-id", "x/y", "--token", TOKEN]) == 0
    card = ModelCard.load(os.path.join(model, "README.md"))
    assert "cooccurrence_bias_mean_abs" in _metrics(card) and 'from_pretrained("x/y")' in card.text
    files = set(fake_hub.uploads()[0]["files"])
    assert {"README.md", "trainer_state.json", "all_results.json"} <= files  # no DP: everything is uploaded


def test_dp_push_leaves_out_unprotected_files_unless_asked(trained, tmp_path, fake_hub):
    from distill.privacy.disclosure import OUTSIDE_EPSILON

    model = _copy(trained[0], tmp_path)
    with open(os.path.join(model, "privacy.json"), "w") as fh:
        json.dump({**PRIVACY, "run_id": read_run_id(model), "privacy_unit": "one record",
                   "outside_epsilon": list(OUTSIDE_EPSILON), "frozen_parameters": {"names": [], "why_public": "none"}},
                  fh)
    open(os.path.join(model, "train_results.json"), "w").write('{"train_loss": 1.0, "train_runtime": 2.5}')
    assert cli_main(["push", "--model", model, "--repo-id", "x/y", "--token", TOKEN]) == 0
    files = set(fake_hub.uploads()[0]["files"])
    assert not files & {"trainer_state.json", "all_results.json", "train_results.json"}
    assert {"README.md", "model.safetensors", "privacy.json"} <= files
    text = open(os.path.join(model, "README.md")).read()
    assert "`distill push` left out the files that hold values outside ε" in text
    assert "`trainer_state.json`" in text and "trainer_state.json and any training logs" in text
    fake_hub.calls = []
    assert cli_main(["push", "--model", model, "--repo-id", "x/y", "--token", TOKEN, "--include-unprotected"]) == 0
    assert {"trainer_state.json", "all_results.json", "train_results.json"} <= set(fake_hub.uploads()[0]["files"])
    assert "`distill push --include-unprotected` also uploaded" in open(os.path.join(model, "README.md")).read()


FL_REPORT = {"flwr_version": "1.0", "local_dp": False,
             "federated": {"num_devices": 4, "devices_per_round": 2, "num_rounds": 3, "local_steps": 5,
                           "selection": "uniform", "activity_exponent": 1.0, "setting": "static", "storage": None,
                           "partition": "iid", "partition_alpha": 0.5, "partition_attribute": "gender",
                           "central_dp": False, "central_dp_noise_multiplier": 1.0, "central_dp_clipping_norm": 1.0},
             "devices": {"total_records": 40, "sizes": [10, 10, 10, 10]},
             "rounds": [{"round": 0, "perplexity": 90.0}, {"round": 3, "perplexity": 50.0,
                                                           "cooccurrence_bias_mean_abs": 0.5}]}


def test_card_force_keeps_the_federated_section(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    with open(os.path.join(model, "fl_report.json"), "w") as fh:
        json.dump({**FL_REPORT, "run_id": read_run_id(model)}, fh)
    path = os.path.join(model, "README.md")
    with open(path, "w") as fh:
        fh.write("# my own card\n")
    assert cli_main(["card", "--model", model, "--force"]) == 0
    text = open(path).read()
    assert GENERATED_MARKER in text and "## Federated training" in text and "| devices (N) | 4 |" in text
    assert text.index("## Federated training") < text.index("## Evaluation")
    assert cli_main(["card", "--model", model]) == 0  # a refresh keeps it too, once
    assert open(path).read().count("## Federated training") == 1


def _set_config(model, **keys):
    import yaml

    path = os.path.join(model, "distill_config.yaml")
    cfg = yaml.safe_load(open(path))
    cfg.update(keys)
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)


def test_card_names_the_divergence_the_cache_and_the_compute(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    text = open(os.path.join(model, "README.md")).read()
    assert "D = KL(teacher‖student) (forward KL)" in text
    assert "**Teacher targets:** computed by a forward pass of the teacher" in text
    assert "## Compute" in text and "| training time | " in text and "## Out-of-scope use" in text
    assert "Counterfactual Role Reversal" in text and "Sanh, Victor and Debut" in text and "@inproceedings" in text
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_text(json.dumps({"top_k": 16, "dtype": "float16"}))
    _set_config(model, kd_loss="jsd", kd_beta=0.3, teacher_cache=str(cache))
    write_model_card(model)
    text = open(os.path.join(model, "README.md")).read()
    assert "D = JSD_β(teacher, student)" in text and "β = 0.3" in text
    assert "read from a teacher cache" in text and "top-16 log-probabilities in float16" in text
    _set_config(model, kd_loss="skew_reverse_kl", kd_skew_alpha=0.2, teacher_cache=None)
    write_model_card(model)
    text = open(os.path.join(model, "README.md")).read()
    assert "(skew reverse KL) with α = 0.2" in text and "KL(teacher‖student)" not in text


def test_compute_says_not_recorded_without_records(trained, tmp_path):
    model = _copy(trained[0], tmp_path)
    for name in ("trainer_state.json", "all_results.json"):
        if os.path.exists(os.path.join(model, name)):
            os.remove(os.path.join(model, name))
    write_model_card(model)
    text = open(os.path.join(model, "README.md")).read()
    assert "| training time | not recorded |" in text and "| devices (processes) | not recorded |" in text
