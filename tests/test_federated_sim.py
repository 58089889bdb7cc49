"""End to end in Flower's simulation engine: 3 devices x 2 rounds, one device failing mid-run."""

import json
import os

import numpy as np
import pytest

import flwr  # noqa: F401  (the [fl] extra: the suite needs it, never skipped)

from distill.commands.federated import load_configs  # noqa: E402
from distill.federated.local_training import LocalDistillation  # noqa: E402
from distill.federated.config import FederatedConfig  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FailOnDevice:
    """The real local step, except that ``device`` raises in ``server_round`` (a device crashing mid-round)."""

    def __init__(self, local, device, server_round):
        self.local, self.device, self.round = local, device, server_round

    def __call__(self, state, texts, server_round, device):
        if (device, server_round) == (self.device, self.round):
            raise RuntimeError(f"device {device} lost power")
        return self.local(state, texts, server_round, device)


@pytest.mark.slow
def test_three_devices_two_rounds_with_a_failing_device(tmp_path, tiny_args):
    from distill.federated.devices import DeviceData
    from distill.federated.selection import select_devices
    from distill.federated.simulation import load_corpus, run_federated, trainable_names
    from distill.model_loading import load_causal_lm
    from distill.distillation.student import build_student

    args = tiny_args(output_dir=str(tmp_path / "fl"), max_train_samples=48, packing=False, student_num_layers=1,
                     cda="two_sided", perturbation="mean")
    fl = FederatedConfig(num_devices=3, devices_per_round=2, num_rounds=2, local_steps=2, partition="quantity",
                         partition_alpha=1.0, selection="activity", eval_max_records=8,
                         eval_occupations=["nurse", "carpenter"], seed=5)
    # the server's seeded selection, replayed here: make a device selected in round 2 fail there
    counts = DeviceData(load_corpus(args)[0], fl, seed=5).counts(1)
    rng = np.random.default_rng(5)
    expected = [select_devices(counts, 2, rng, "activity")[0] for _ in range(2)]
    failing = expected[1][0]
    student = build_student(load_causal_lm(args.teacher_model_name_or_path), num_layers=1)
    names = trainable_names(student, local_dp=False)
    local = FailOnDevice(LocalDistillation(args, fl.local_steps, names), failing, 2)

    report = run_federated(args, fl, local, name="tiny")

    out = tmp_path / "fl"
    on_disk = json.loads((out / "fl_report.json").read_text())
    assert on_disk["failures"] == report["failures"]
    rounds = on_disk["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]  # initial evaluation + one per round
    assert [r["selected"] for r in rounds[1:]] == expected
    assert sorted(x["device"] for x in rounds[1]["replied"]) == sorted(expected[0])
    assert [x["device"] for x in rounds[2]["replied"]] == [d for d in expected[1] if d != failing]
    # the run went on, and the report says who failed, when and why
    assert [(f["round"], f["device"], f["stage"]) for f in on_disk["failures"]] == [(2, failing, "train")]
    assert "lost power" in on_disk["failures"][0]["reason"]
    assert sum(on_disk["devices"]["sizes"]) == 48 and rounds[1]["held_records"] == on_disk["devices"]["sizes"]
    for r in rounds:
        assert np.isfinite(r["perplexity"]) and np.isfinite(r["cooccurrence_bias_mean_abs"])
        # the bias is the mean |b_g| over the professions asked, with its interval over them
        by = r["cooccurrence_bias_by_profession"]
        assert set(by) == {"nurse", "carpenter"} and r["num_bias_prompts"] == 12  # 2 professions x 6 templates
        assert r["cooccurrence_bias_mean_abs"] == pytest.approx(np.mean(np.abs(list(by.values()))))
        lo, hi = r["cooccurrence_bias_ci95"]
        assert lo <= r["cooccurrence_bias_mean_abs"] <= hi
    assert rounds[1]["probabilities"] == pytest.approx(np.array(counts) / sum(counts))
    # the global student moved, and is saved with a card that says how it was trained
    assert rounds[2]["perplexity"] != rounds[0]["perplexity"]
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert set(names) <= set(saved) | {"lm_head.weight"}
    card = (out / "README.md").read_text()
    assert "## Federated training" in card and "trained **federatedly**" in card
    assert "95 % interval over the professions asked: [" in card and ", 12 prompts)" in card
    assert "| devices (N) | 3 |" in card and "| selection | activity" in card and "| device failures | 1 |" in card
    for name in ("fl_rounds.png", "fairness.json", "distill_config.yaml", "tokenizer.json"):
        assert (out / name).is_file(), name


def test_cli_config_splits_federated_keys_and_flags():
    args, fl = load_configs(os.path.join(REPO, "configs", "tiny-fl.yaml"),
                            ["--num_rounds", "4", "--selection=uniform", "--learning_rate", "0.01",
                             "--output_dir", "/tmp/x"])
    assert (fl.num_rounds, fl.selection, fl.num_devices) == (4, "uniform", 3)
    assert args.learning_rate == 0.01 and args.output_dir == "/tmp/x" and args.packing is False


def test_cli_config_errors_name_the_file(tmp_path):
    from distill.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rte: 0.1\nfederated:\n  num_devices: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'learning_rte'"):
        load_configs(str(bad), [])
    bad.write_text("federated:\n  selectoin: activity\n")
    with pytest.raises(ConfigError, match="did you mean selection"):
        load_configs(str(bad), [])


def test_deployment_entry_points_are_flower_apps():
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    import distill.commands.federated as cmd
    import distill.federated.deployment as dep

    assert isinstance(dep.server_app, ServerApp) and isinstance(dep.client_app, ClientApp)
    assert cmd.server_app is dep.server_app and cmd.client_app is dep.client_app  # the command's alias


def test_local_step_with_dp_sgd_returns_trainable_weights_and_epsilon(tiny_args):
    """The device's local step in-process: DP-SGD freezes the embeddings, so they are not sent."""
    import torch

    from distill.federated.simulation import trainable_names
    from distill.model_loading import load_causal_lm
    from distill.distillation.student import build_student

    args = tiny_args(packing=False, student_num_layers=1, dp_enabled=True, dp_noise_multiplier=1.0,
                     dp_max_grad_norm=1.0, per_device_train_batch_size=4)
    student = build_student(load_causal_lm(args.teacher_model_name_or_path), num_layers=1)
    names = trainable_names(student, local_dp=True)
    assert names and not any("wte" in n or "wpe" in n for n in names)
    params = dict(student.named_parameters())
    state = {n: params[n].detach().clone() for n in names}
    texts = [f"The nurse said that she would be late {i}." for i in range(16)]
    out, metrics = LocalDistillation(args, 2, names)(state, texts, server_round=1, device=0)
    assert list(out) == names
    assert any(not torch.equal(out[n], state[n]) for n in names)  # it trained
    assert 0 < metrics["local_epsilon"] < float("inf") and np.isfinite(metrics["train_loss"])


def test_local_step_builds_its_models_with_the_one_builder_once_per_process(tiny_args, tmp_path, monkeypatch):
    """The federated local step builds teacher + student with distill.distillation.models.build_models, once per
    process, and honours student_model_name_or_path (the deployed client and `distill federated` used to ignore it)."""
    from distill.distillation import models
    from distill.distillation.student import build_student
    from distill.federated import local_training
    from distill.model_loading import load_causal_lm

    path = str(tmp_path / "student")
    teacher = load_causal_lm(tiny_args().teacher_model_name_or_path)
    build_student(teacher, num_layers=1).save_pretrained(path, safe_serialization=True)
    calls, real = [], models.build_models
    monkeypatch.setattr(models, "build_models", lambda a, **kw: calls.append(a) or real(a, **kw))
    monkeypatch.setattr(local_training, "_MODELS", {})
    args = tiny_args(packing=False, student_model_name_or_path=path, student_num_layers=3)
    local = local_training.make_local_step(args, FederatedConfig(local_steps=1))
    assert local.trainable and not any(".h.1." in n for n in local.trainable)  # the saved 1-block student
    _, student, _ = local_training.process_models(args)
    params = dict(student.named_parameters())
    state = {n: params[n].detach().clone() for n in local.trainable}
    texts = [f"The nurse said that she would be late {i}." for i in range(8)]
    for server_round in (1, 2):
        out, metrics = local(state, texts, server_round=server_round, device=0)
        assert list(out) == local.trainable and np.isfinite(metrics["train_loss"])
    assert len(calls) == 1 and calls[0].student_model_name_or_path == path
    assert student.config.n_layer == 1
