import pytest
import yaml

from distill.distillation.config import DistillationConfig, load_config
from distill.errors import ConfigError


def _write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_with_sections_and_cli_override(tmp_path):
    path = _write(tmp_path, {"temperature": 3.0, "learning_rate": "1e-4", "student_layers": [0, 3],
                             "packing": False, "dp": {"enabled": True, "noise_multiplier": 0.8}, "output_dir": str(tmp_path / "o")})
    cfg = load_config(path, ["--temperature", "4.0"])
    assert cfg.temperature == 4.0  # CLI beats YAML
    assert cfg.learning_rate == pytest.approx(1e-4)  # string in YAML is converted
    assert cfg.student_layers == [0, 3]
    assert cfg.dp_enabled and cfg.dp_noise_multiplier == 0.8


def test_unknown_yaml_key_lists_close_matches(tmp_path):
    path = _write(tmp_path, {"temprature": 2.0, "alpha_kl": 1.0})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "'temprature'" in msg and "temperature" in msg
    assert "'alpha_kl'" in msg and "alpha_kd" in msg


def test_unknown_cli_flag_and_section(tmp_path):
    with pytest.raises(ConfigError, match="did you mean learning_rate"):
        load_config(None, ["--learning_rat", "0.1"])
    with pytest.raises(ConfigError, match="section 'model:' is not known"):
        load_config(_write(tmp_path, {"model": {"name": "gpt2"}}))


@pytest.mark.parametrize("kw,match", [
    ({"temperature": 0}, "temperature must be a finite number > 0"),
    ({"alpha_kd": 0, "alpha_lm": 0}, "all 0"),
    ({"cda": "both"}, "cda must be one of"),
    ({"perturbation": "avg"}, "perturbation must be one of"),
    ({"dp_enabled": True, "packing": False}, "give dp_target_epsilon"),
    ({"dp_enabled": True, "dp_noise_multiplier": 1.0}, "needs packing: false"),
])
def test_invalid_values_raise_clear_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        DistillationConfig(output_dir=str(tmp_path), **kw)


def test_saved_yaml_round_trips(tmp_path):
    cfg = DistillationConfig(output_dir=str(tmp_path / "o"), temperature=3.5, student_layers=[0, 2],
                             learning_rate=2e-4, dp_enabled=True, dp_target_epsilon=8.0, packing=False)
    cfg.save_yaml(str(tmp_path / "c.yaml"))
    again = load_config(str(tmp_path / "c.yaml"))
    assert again.distill_dict() == cfg.distill_dict()


def test_shipped_configs_parse():
    import glob
    import os

    here = os.path.dirname(os.path.dirname(__file__))
    paths = glob.glob(os.path.join(here, "configs", "*.yaml"))
    names = {os.path.basename(p) for p in paths}
    assert {"gpt2-to-distilgpt2-dp.yaml", "gpt2-to-distilgpt2-cached.yaml", "gpt2-fl.yaml"} <= names
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        if "federated" in raw:  # a federated run: its section is read by `distill federated`
            from distill.commands.federated import load_configs

            # GPU recipes use bf16, which TrainingArguments rejects on a CPU-only machine: check the rest.
            cfg, fl = load_configs(path, ["--bf16", "false"] if raw.get("bf16") else [])
            assert cfg.teacher_model_name_or_path and fl.num_devices > 0
            continue
        # GPU recipes use bf16, which TrainingArguments rejects on a CPU-only machine: check the rest.
        cfg = load_config(path, overrides={"bf16": False})
        assert cfg.teacher_model_name_or_path


# ---- declared types and ranges -----------------------------------------------------------------------
def _cli_error(capsys, argv, *needles):
    """Run the CLI in-process: exit 2 and one `distill CMD: error: ...` line holding every needle."""
    from distill.cli import main

    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("flags,needles", [
    (["--per_device_train_batch_size", "0"], ["per_device_train_batch_size", ">= 1", "got 0"]),
    (["--learning_rate", "-1"], ["learning_rate", ">= 0", "got -1"]),
    (["--validation_split_percentage", "100"], ["validation_split_percentage", "[0, 100)", "got 100"]),
    (["--max-steps", "-5"], ["max_steps", ">= -1", "got -5", "-1 means: train for num_train_epochs"]),
    (["--max_steps", "0", "--num_train_epochs", "0"], ["Nothing to train", "max_steps", "num_train_epochs > 0"]),
    (["--temperature", "warm"], ["command line: temperature must be a number", "'warm'"]),
    (["--kd-loss", "kl"], ["kd_loss must be one of forward_kl", "'kl'"]),
    (["--loss_chunk_size", "-3"], ["loss_chunk_size", "got -3"]),
])
def test_bad_values_are_one_error_line(tmp_path, capsys, flags, needles):
    line = _cli_error(capsys, ["train", "--output_dir", str(tmp_path / "o"), *flags], *needles)
    assert line.startswith("distill train: error: ")
    assert not (tmp_path / "o").exists()


def _outside(bounds, integer):
    import math

    if bounds.lo != -math.inf:
        bad = bounds.lo if bounds.lo_open else bounds.lo - (1 if integer else 0.5)
    else:
        bad = bounds.hi if bounds.hi_open else bounds.hi + 1
    return int(bad) if integer else float(bad)


def _ranged_fields(cls):
    import dataclasses

    from distill.distillation.config_loader import field_range, field_types

    types = field_types(cls)
    for f in dataclasses.fields(cls):
        bounds = field_range(f)
        if bounds is not None:
            yield f.name, bounds, "int" in str(types[f.name]) or types[f.name] is int


def test_every_declared_range_is_enforced(tmp_path):
    """Walk every numeric field with a declared range: a value just outside it is one ConfigError naming it."""
    import re

    from distill.federated.config import FederatedConfig

    checked = 0
    for cls, kwargs in ((DistillationConfig, {"output_dir": str(tmp_path)}), (FederatedConfig, {})):
        for name, bounds, integer in _ranged_fields(cls):
            bad = _outside(bounds, integer)
            with pytest.raises(ConfigError, match=rf"{name} must be .*{re.escape(bounds.describe())}, got"):
                cls(**kwargs, **{name: bad})
            checked += 1
            if not integer:  # nan / inf are never in a range
                with pytest.raises(ConfigError, match=name):
                    cls(**kwargs, **{name: float("nan")})
    assert checked >= 35


def test_choice_types_match_the_feature_packages():
    from typing import get_args

    from distill.counterfactual.cda import CDA_MODES
    from distill.counterfactual.perturbation import PERTURBATION_MODES
    from distill.distillation import config
    from distill.divergences import KD_LOSSES
    from distill.federated import config as fl
    from distill.federated.partition import ATTRIBUTES, PARTITIONS
    from distill.federated.selection import SELECTIONS
    from distill.federated.storage import SETTINGS

    assert get_args(config.CdaMode) == CDA_MODES and get_args(config.PerturbationMode) == PERTURBATION_MODES
    assert get_args(config.KDLoss) == KD_LOSSES
    assert (get_args(fl.Partition), get_args(fl.PartitionAttribute)) == (PARTITIONS, ATTRIBUTES)
    assert (get_args(fl.Selection), get_args(fl.Setting)) == (SELECTIONS, SETTINGS)


def test_loss_chunk_size_is_an_int_or_a_word():
    assert DistillationConfig(loss_chunk_size="64").loss_chunk_size == 64
    assert load_config(None, ["--loss-chunk-size", "off"]).loss_chunk_size == "off"
    with pytest.raises(ConfigError, match="loss_chunk_size must be an integer or one of auto, off"):
        load_config(None, ["--loss_chunk_size", "big"])


# ---- YAML files and flags ----------------------------------------------------------------------------
def test_repeated_config_merges_in_order(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"temperature": 3.0, "alpha_cos": 0.5, "dp": {"delta": 1e-6}}))
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump({"temperature": 5.0, "dp": {"max_grad_norm": 2.0}}))
    cfg = load_config(None, ["--config", str(base), "--config", str(top), "--alpha-cos", "0.25"])
    assert (cfg.temperature, cfg.alpha_cos, cfg.dp_delta, cfg.dp_max_grad_norm) == (5.0, 0.25, 1e-6, 2.0)
    again = load_config([str(top), str(base)])  # the order decides
    assert again.temperature == 3.0
    # an error names the file it comes from
    (tmp_path / "bad.yaml").write_text("block_size: big\n")
    _cli_error(capsys, ["train", "--config", str(base), "--config", str(tmp_path / "bad.yaml")],
               "distill train: error:", "bad.yaml: block_size must be an integer, got 'big'")


def test_yaml_syntax_error_is_one_line_with_the_line_number(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("temperature: 2.0\nalpha_kd: [1.0\nalpha_lm: 1.0\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+: .* at column \d+ \(.*not valid YAML") as info:
        load_config(str(bad))
    assert len(str(info.value).splitlines()) == 1
    _cli_error(capsys, ["train", "--config", str(bad)], "distill train: error:", f"{bad}: line ")


def test_flag_forms():
    cfg = load_config(None, ["--max-steps=7", "--student_layers", "0", "2", "--packing", "false", "--fp16=false",
                             "--teacher-dtype", "float32", "--cda_names"])
    assert (cfg.max_steps, cfg.student_layers, cfg.packing, cfg.teacher_dtype) == (7, [0, 2], False, "float32")
    assert cfg.cda_names is True and cfg.fp16 is False  # a bare boolean flag means true
    with pytest.raises(ConfigError, match="command line: unexpected argument 'stray'"):
        load_config(None, ["stray"])
    with pytest.raises(ConfigError, match="--config needs one file path"):
        load_config(None, ["--config"])


# ---- the federated: section --------------------------------------------------------------------------
FL_WRONG = {"num_devices": "three", "devices_per_round": 1.5, "num_rounds": "abc", "local_steps": True,
            "partition": "random", "partition_alpha": "abc", "partition_attribute": "age", "min_records": [1],
            "selection": "best", "activity_exponent": "high", "setting": "sometimes", "storage": "many",
            "central_dp": "maybe", "central_dp_noise_multiplier": "loud", "central_dp_clipping_norm": [],
            "central_dp_delta": "small", "eval_max_records": "all", "eval_occupations": {"nurse": 1},
            "client_cpus": "lots", "seed": "random"}


def test_every_federated_key_is_type_checked(tmp_path):
    import dataclasses

    from distill.federated.config import FederatedConfig, load_federated_config

    assert set(FL_WRONG) == {f.name for f in dataclasses.fields(FederatedConfig)}
    for key, value in FL_WRONG.items():
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({"teacher_model_name_or_path": "builtin:tiny-gpt2",
                                        "federated": {key: value}}))
        with pytest.raises(ConfigError, match=rf"{key}\.yaml: federated\.{key} must be ") as info:
            load_federated_config(str(path))
        assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("flags,needle", [
    (["--partition_alpha", "abc"], "command line: federated.partition_alpha must be a number, got 'abc'"),
    (["--client_cpus", "lots"], "command line: federated.client_cpus must be a number, got 'lots'"),
    (["--storage", "many"], "command line: federated.storage must be an integer (or null), got 'many'"),
    (["--num-rounds", "0"], "federated.num_rounds must be an integer >= 1, got 0"),
    (["--selection", "best"], "federated.selection must be one of uniform, activity"),
    (["--num_round", "3"], "did you mean num_rounds"),
])
def test_federated_flags_are_checked(capsys, flags, needle):
    line = _cli_error(capsys, ["federated", "--config", "configs/tiny-fl.yaml", *flags], needle)
    assert line.startswith("distill federated: error: ")


def test_federated_flags_with_dashes_and_files_merged(tmp_path):
    import os

    from distill.federated.config import load_federated_config

    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump({"learning_rate": 0.02, "federated": {"num_devices": 4}}))
    args, fl = load_federated_config(["configs/tiny-fl.yaml", str(more)],
                                     ["--num-rounds", "5", "--partition-alpha", "0.3", "--storage", "null"])
    assert (fl.num_rounds, fl.partition_alpha, fl.num_devices, fl.storage) == (5, 0.3, 4, None)
    assert args.learning_rate == 0.02
    if os.path.exists(args.teacher_model_name_or_path):
        assert os.path.isabs(args.teacher_model_name_or_path)
    _, fl = load_federated_config("configs/tiny-fl.yaml", ["--storage", "10"], compare=True)
    assert (fl.setting, fl.storage) == ("continual", 10)
