"""`DistillationConfig`: every knob of a distillation run, loadable from YAML with CLI overrides.

The config is one dataclass that extends :class:`transformers.TrainingArguments`, in the style of TRL's
trainer configs. YAML files may be flat (``temperature: 2.0``) or use sections for the privacy and
fairness groups (``dp: {enabled: true}`` is the same as ``dp_enabled: true``). Command-line flags
override YAML keys: ``distill train --config x.yaml --learning_rate 1e-4``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..counterfactual.cda import CDA_MODES
from ..counterfactual.perturbation import PERTURBATION_MODES
from ..divergences import KD_LOSSES
from ..errors import ConfigError

#: YAML sections that are flattened into ``{section}_{key}`` fields.
SECTIONS = ("dp", "fairness")

TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")
DP_ACCOUNTANTS = ("rdp", "prv")
DP_MODES = ("fast", "hooks", "ghost")
CACHE_DTYPES = ("float16", "float32")
#: Never written to distill_config.yaml (it is uploaded with the model by `distill push`).
SECRET_KEYS = ("hub_token",)


@dataclass
class DistillationConfig(TrainingArguments):
    """Training arguments for :class:`distill.DistillationTrainer`.

    On top of all :class:`transformers.TrainingArguments` it holds the teacher/student models, the
    distillation loss weights, the data source, counterfactual role reversal (CRR), differential
    privacy (``dp_*``) and fairness evaluation (``fairness_*``).
    """

    # ---- models -------------------------------------------------------------------------------
    teacher_model_name_or_path: str = field(
        default="gpt2",
        metadata={"help": "Teacher causal LM: a Hub name, a local directory, or 'builtin:tiny-gpt2'."},
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={"help": f"Teacher weights dtype, one of {TEACHER_DTYPES}. 'auto' keeps float32 on CPU."},
    )
    student_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from this student checkpoint instead of building one from the teacher."},
    )
    student_num_layers: int | None = field(
        default=None,
        metadata={"help": "Depth of a student built from the teacher (default: half the teacher's depth)."},
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Teacher blocks copied into the student, in order (default: an even spread, "
                  "0 2 4 7 9 11 for 12 -> 6)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use (default: the teacher's)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models/datasets to run code from the Hub. Off by default."}
    )
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Allow loading non-safetensors (pickle) weights, which can execute code."},
    )

    # ---- distillation loss ----------------------------------------------------------------------
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature T of the KD term."})
    alpha_kd: float = field(default=1.0, metadata={"help": "Weight of T^2 * KL(teacher || student)."})
    alpha_lm: float = field(default=1.0, metadata={"help": "Weight of the student's next-token CE."})
    alpha_cos: float = field(
        default=0.0, metadata={"help": "Weight of 1 - cos(h_student, h_teacher) on last hidden states."}
    )

    loss_chunk_size: str = field(
        default="auto",
        metadata={"help": "The loss runs the output layers over chunks of this many positions, so no [batch, length, "
                  "vocab] tensor is held (same loss and gradients): 'auto' (~32 MiB of float32 logits a chunk on "
                  "CPU, ~256 MiB on GPU), a number, or 'off' for the plain loss on full logits."},
    )

    # ---- KD divergence and teacher cache (distill.divergences, distill.distillation.teacher_cache) ----------------
    kd_loss: str = field(
        default="forward_kl",
        metadata={"help": f"Divergence D of the KD term T^2 * D(teacher || student), one of {KD_LOSSES}."},
    )
    kd_beta: float = field(
        default=0.5, metadata={"help": "jsd: beta of TRL GKD's generalized JSD (0 = forward KL, 1 = reverse KL)."}
    )
    kd_skew_alpha: float = field(
        default=0.1, metadata={"help": "skew_forward_kl / skew_reverse_kl: the skew alpha, in [0, 1)."}
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={"help": "Train from a teacher cache written by `distill cache-teacher` (no teacher forward)."},
    )
    teacher_cache_top_k: int | None = field(
        default=None,
        metadata={"help": "Top-k entries stored per position by `distill cache-teacher` (default 64); when "
                  "training from a cache, the k it must hold."},
    )
    teacher_cache_dtype: str = field(
        default="float16", metadata={"help": f"Dtype of the cached log-probabilities, one of {CACHE_DTYPES}."}
    )
    teacher_cache_shard_size: int = field(
        default=1000, metadata={"help": "Training rows per cache shard (the unit of resuming a cache build)."}
    )

    # ---- data -----------------------------------------------------------------------------------
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A `datasets` Hub name, or 'builtin:tiny' / 'builtin:demo' for offline corpora."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    train_file: str | None = field(
        default=None, metadata={"help": "Local training file: .txt, .json, .jsonl, .csv or .parquet."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    block_size: int = field(default=128, metadata={"help": "Length of the packed training blocks."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Held-out share of the training data when there is no validation set."}
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Pack documents into full blocks (true) or keep one record per row (false; DP "
                  "with records as the privacy unit needs false)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the raw training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the raw validation set."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Workers for `map`."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into a non-empty output_dir (never needed to resume)."},
    )

    # ---- counterfactual role reversal -----------------------------------------------------------------
    cda: str = field(
        default="none",
        metadata={"help": f"Counterfactual data augmentation, one of {CDA_MODES}."},
    )
    cda_prob: float = field(
        default=0.5, metadata={"help": "one_sided: probability that a gendered example is swapped."}
    )
    cda_names: bool = field(default=False, metadata={"help": "Also swap first names (off by default)."})
    cda_pairs_file: str | None = field(
        default=None, metadata={"help": "Your own gendered word pairs (one 'male<TAB>female' pair a line)."}
    )
    perturbation: str = field(
        default="none",
        metadata={"help": f"Teacher-prediction perturbation, one of {PERTURBATION_MODES}."},
    )
    perturbation_lambda: float = field(
        default=0.5, metadata={"help": "interpolate: weight of the role-reversed teacher prediction."}
    )

    # ---- differential privacy ---------------------------------------------------------------------------
    dp_enabled: bool = field(default=False, metadata={"help": "Train the student with DP-SGD."})
    dp_target_epsilon: float | None = field(
        default=None, metadata={"help": "Privacy budget: without dp_noise_multiplier the noise is calibrated to "
                                "reach it at the end of training; with it, training stops before exceeding it."}
    )
    dp_noise_multiplier: float | None = field(
        default=None, metadata={"help": "Noise multiplier sigma (alternative to dp_target_epsilon)."}
    )
    dp_delta: float | None = field(
        default=None, metadata={"help": "Delta (default: min(1e-5, 1/(N ln N)) for N records; must be < 1/N unless "
                                "dp_allow_large_delta)."}
    )
    dp_allow_large_delta: bool = field(
        default=False, metadata={"help": "Accept a dp_delta >= 1/N (a weak guarantee: off by default)."}
    )
    dp_reproducible: bool = field(
        default=False, metadata={"help": "Derive the DP noise and record sampling from `seed` (tests/debugging only: "
                                 "the guarantee then does not hold, and privacy.json and the model card say so). "
                                 "Default: secret randomness from the OS."}
    )
    dp_max_grad_norm: float = field(default=1.0, metadata={"help": "Per-record gradient clipping norm C."})
    dp_accountant: str = field(default="rdp", metadata={"help": f"Privacy accountant, one of {DP_ACCOUNTANTS}."})
    dp_poisson_sampling: bool = field(
        default=True, metadata={"help": "Poisson-sample the records of each logical batch (what the accountant "
                                "assumes); false: shuffled fixed-size batches."}
    )
    dp_mode: str = field(
        default="fast",
        metadata={"help": f"Per-sample gradient method, one of {DP_MODES}. 'fast' is the single-backward "
                  "book-keeping method; 'hooks'/'ghost' are opacus' own modes."},
    )
    canary_repeats: int = field(
        default=0, metadata={"help": "Insert a random secret canary this many times (privacy audits)."}
    )
    canary_seed: int = field(default=1234, metadata={"help": "Seed of the inserted canary."})

    # ---- fairness evaluation ---------------------------------------------------------------------------
    fairness_enabled: bool = field(
        default=False, metadata={"help": "Compute fairness metrics on the student at each evaluation."}
    )
    fairness_metrics: list[str] = field(
        default_factory=lambda: ["cooccurrence"],
        metadata={"help": "Metrics logged by the fairness callback: cooccurrence, parity, sentiment."},
    )
    fairness_prompts: str = field(
        default="builtin", metadata={"help": "Prompt source: builtin, bold:FILE or a .txt/.jsonl file."}
    )
    fairness_num_samples: int = field(default=1, metadata={"help": "Generations per prompt."})
    fairness_max_new_tokens: int = field(default=20, metadata={"help": "Tokens generated per prompt."})
    fairness_max_prompts_per_group: int | None = field(
        default=None, metadata={"help": "Limit prompts per group (BOLD) or per profession."}
    )

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "runs/distill"
        super().__post_init__()
        _check_choice("teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        _check_choice("cda", self.cda, CDA_MODES)
        _check_choice("perturbation", self.perturbation, PERTURBATION_MODES)
        _check_choice("dp_accountant", self.dp_accountant, DP_ACCOUNTANTS)
        _check_choice("dp_mode", self.dp_mode, DP_MODES)
        self.loss_chunk_size = _chunk_size(self.loss_chunk_size)
        self._check_kd_and_cache()
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")
        for name in ("alpha_kd", "alpha_lm", "alpha_cos"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}.")
        if self.alpha_kd + self.alpha_lm + self.alpha_cos == 0:
            raise ConfigError("alpha_kd, alpha_lm and alpha_cos are all 0: set at least one of them > 0.")
        if not 0.0 <= self.cda_prob <= 1.0:
            raise ConfigError(f"cda_prob must be in [0, 1], got {self.cda_prob}.")
        if not 0.0 <= self.perturbation_lambda <= 1.0:
            raise ConfigError(f"perturbation_lambda must be in [0, 1], got {self.perturbation_lambda}.")
        if self.block_size < 2:
            raise ConfigError(f"block_size must be >= 2, got {self.block_size}.")
        if self.student_layers is not None and self.student_num_layers is not None:
            if len(self.student_layers) != self.student_num_layers:
                raise ConfigError(
                    f"student_layers has {len(self.student_layers)} entries but student_num_layers is "
                    f"{self.student_num_layers}: give one of them, or make them agree."
                )
        if self.canary_repeats < 0:
            raise ConfigError(f"canary_repeats must be >= 0, got {self.canary_repeats}.")
        if self.dp_enabled:
            if self.dp_target_epsilon is None and self.dp_noise_multiplier is None:
                raise ConfigError(
                    "With dp_enabled, give dp_target_epsilon (noise calibrated to reach it), dp_noise_multiplier, "
                    "or both (train with that noise and stop before exceeding the target)."
                )
            if self.packing:
                raise ConfigError(
                    "dp_enabled needs packing: false. DP protects each training record, so every row must hold "
                    "one record (packing mixes records into shared blocks)."
                )
            if self.fp16:
                raise ConfigError("dp_enabled does not support fp16 loss scaling: use bf16 or float32.")
            if self.gradient_checkpointing:
                raise ConfigError("dp_enabled does not support gradient_checkpointing: turn it off.")
            # per-record clipping (dp_max_grad_norm) replaces global clipping of the (noisy) gradient
            self.max_grad_norm = 0.0
        self._check_dp_numbers()

    def _check_dp_numbers(self) -> None:
        """The DP budget keys: finite numbers in range (nan / inf are errors, not budgets)."""
        checks = (("dp_target_epsilon", lambda v: v > 0, "a finite number > 0 (e.g. 8)"),
                  ("dp_noise_multiplier", lambda v: v >= 0, "a finite number >= 0 (e.g. 1.0)"),
                  ("dp_delta", lambda v: 0 < v < 1, "a finite number in (0, 1), below 1/records"),
                  ("dp_max_grad_norm", lambda v: v > 0, "a finite number > 0"))
        for name, ok, what in checks:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise ConfigError(f"{name} must be {what}, got {value}.")

    def _check_kd_and_cache(self) -> None:
        _check_choice("kd_loss", self.kd_loss, KD_LOSSES)
        _check_choice("teacher_cache_dtype", self.teacher_cache_dtype, CACHE_DTYPES)
        if not 0.0 <= self.kd_beta <= 1.0:
            raise ConfigError(f"kd_beta must be in [0, 1], got {self.kd_beta}.")
        if not 0.0 <= self.kd_skew_alpha < 1.0:
            raise ConfigError(f"kd_skew_alpha must be in [0, 1), got {self.kd_skew_alpha}.")
        if self.teacher_cache_top_k is not None and self.teacher_cache_top_k < 1:
            raise ConfigError(f"teacher_cache_top_k must be >= 1, got {self.teacher_cache_top_k}.")
        if self.teacher_cache_shard_size < 1:
            raise ConfigError(f"teacher_cache_shard_size must be >= 1, got {self.teacher_cache_shard_size}.")
        if self.teacher_cache and self.alpha_cos > 0:
            raise ConfigError("teacher_cache stores the teacher's output distribution, not its hidden states, so "
                              "alpha_cos must be 0 when training from a cache: set alpha_cos: 0.")

    def kd_kwargs(self) -> dict[str, Any]:
        """The KD divergence keys of :func:`distill.distillation.losses.distillation_loss`."""
        return {"kd_loss": self.kd_loss, "kd_beta": self.kd_beta, "kd_skew_alpha": self.kd_skew_alpha}

    # ---- (de)serialisation ----------------------------------------------------------------------------
    def distill_dict(self, only_non_default: bool = True) -> dict[str, Any]:
        """The config as a plain dict of YAML-safe values (by default only keys that differ from defaults)."""
        defaults = _default_values() if only_non_default else {}
        out = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name.startswith("_") or f.name in SECRET_KEYS:
                continue
            value = getattr(self, f.name)
            value = getattr(value, "value", value)  # enums
            if isinstance(value, (list, tuple)):
                value = [getattr(v, "value", v) for v in value]
            if not isinstance(value, (str, int, float, bool, list, type(None))):
                continue
            if only_non_default and f.name != "output_dir" and value == defaults.get(f.name, object()):
                continue
            out[f.name] = value
        return out

    def save_yaml(self, path: str) -> None:
        """Write the config so that ``distill train --config PATH`` re-runs it.

        Every fair-distill key is written, defaults included, with the Trainer keys that differ from their
        defaults or describe the run (learning rate, batch, steps, seed): the file is also the record of the run
        that the model card reads (:mod:`distill.hub.run_info`), whatever the defaults of a later version.
        """
        inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
        described = {"learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                     "num_train_epochs", "seed"}
        recorded = {k: v for k, v in self.distill_dict(only_non_default=False).items()
                    if k not in inherited or k in described}
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump({**recorded, **self.distill_dict()}, fh, sort_keys=True)


def _chunk_size(value: Any) -> int | str:
    """``loss_chunk_size``: 'auto', 'off' or a positive number of positions."""
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"loss_chunk_size must be 'auto', 'off' or a positive number of positions, got {value!r}.")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")


def _default_values() -> dict[str, Any]:
    """Field values of a default config, after ``__post_init__`` normalised them."""
    return DistillationConfig().distill_dict(only_non_default=False)


def config_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(DistillationConfig) if f.init]


def flatten_sections(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Turn ``dp: {enabled: true}`` into ``dp_enabled: true``; leave flat keys as they are."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[f"{key}_{sub}"] = sub_value
        elif isinstance(value, dict) and key not in ("lr_scheduler_kwargs", "gradient_checkpointing_kwargs",
                                                      "optim_args", "accelerator_config", "fsdp_config",
                                                      "deepspeed", "torch_compile_kwargs"):
            raise ConfigError(
                f"{source}: section '{key}:' is not known. Sections are {', '.join(SECTIONS)}; "
                "other keys must be flat (key: value)."
            )
        else:
            flat[key] = value
    return flat


def check_keys(keys, source: str = "config") -> None:
    """Raise one :class:`ConfigError` naming every unknown key and its closest valid keys."""
    known = config_field_names()
    problems = []
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(f"'{key}'{hint}")
    if problems:
        raise ConfigError(
            f"{source}: unknown key{'s' if len(problems) > 1 else ''} {'; '.join(problems)}. "
            "Run `distill train --help` for the full list of keys."
        )


def read_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"Config file '{path}' does not exist. Pass an existing YAML file to --config.")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value pairs, not a {type(raw).__name__}.")
    flat = flatten_sections(raw, source=path)
    check_keys(flat, source=path)
    return flat


class ConfigParser(HfArgumentParser):
    """The config-key parser of `distill train`: a bad flag is one :class:`ConfigError`, not a usage dump."""

    def error(self, message):
        raise ConfigError(f"command line: {message.rstrip('.')}. Run `distill train --help` for the keys and their types.")


def make_parser(prog: str = "distill train") -> HfArgumentParser:
    parser = ConfigParser(DistillationConfig, prog=prog, allow_abbrev=False)
    parser.add_argument("--config", type=str, default=None, help="YAML file of config keys (flags override it).")
    return parser


def own_field_names() -> list[str]:
    """The keys fair-distill adds to :class:`transformers.TrainingArguments`."""
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    return [name for name in config_field_names() if name not in base]


def format_train_help() -> str:
    """`distill train --help`: fair-distill's own keys first, then every TrainingArguments key."""
    parser = make_parser()
    parser.usage = "distill train --config FILE [--key value ...]"
    parser.description = ("Distil a teacher into a student. Keys come from the YAML file given with --config and "
                          "are overridden by --key value flags (dashes or underscores: --max-steps = --max_steps).")
    own = set(own_field_names()) | {"config"}
    # argparse prints one section per argument group: move our keys into a group shown first
    ours = parser.add_argument_group("fair-distill keys (teacher, student, loss, data, CRR, DP, fairness)")
    rest = parser.add_argument_group("transformers.TrainingArguments keys")
    for group in list(parser._action_groups):
        if group in (ours, rest):
            continue
        for action in list(group._group_actions):
            if action.option_strings and action.dest != "help":
                group._group_actions.remove(action)
                (ours if action.dest in own else rest)._group_actions.append(action)
    ours._group_actions.sort(key=lambda a: a.dest != "config")
    parser._action_groups = [g for g in parser._action_groups if g not in (ours, rest)] + [ours, rest]
    return parser.format_help()


def check_value_types(parser: HfArgumentParser, values: dict[str, Any], source: str) -> None:
    """Raise one :class:`ConfigError` naming ``source`` and the key for a YAML value of the wrong type.

    argparse would convert string defaults itself, but then a bad YAML value reads as a bad command-line flag.
    """
    actions = {}
    for a in parser._actions:  # a bool key has --key (typed) and --no_key (store_false): keep the typed one
        if a.type is not None or a.dest not in actions:
            actions[a.dest] = a
    for key, value in values.items():
        action = actions.get(key)
        if action is None or action.type is None or value is None:
            continue
        kind = getattr(action.type, "__name__", "value").replace("string_to_bool", "bool")
        items = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
        for item in items:
            try:
                if isinstance(item, str):
                    item = action.type(item)
                elif action.type is int and not (isinstance(item, int) or (isinstance(item, float) and item.is_integer())):
                    raise ValueError
                elif action.type is float and (isinstance(item, bool) or not isinstance(item, (int, float))):
                    raise ValueError
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                raise ConfigError(f"{source}: {key}: {value!r} is not a valid {kind}.") from None
            if action.choices is not None and item not in action.choices:
                raise ConfigError(f"{source}: {key}: {value!r} is not one of "
                                  f"{', '.join(str(c) for c in action.choices)}.")


def load_config(config_path: str | None = None, cli_args: list[str] | None = None,
                overrides: dict[str, Any] | None = None) -> DistillationConfig:
    """Build a :class:`DistillationConfig` from a YAML file, command-line flags and a dict of overrides.

    Precedence: ``overrides`` > ``cli_args`` > YAML > defaults.
    """
    parser = make_parser()
    cli_args = list(cli_args or [])
    for i, arg in enumerate(cli_args):
        if config_path is None and arg == "--config":
            if i + 1 >= len(cli_args) or cli_args[i + 1].startswith("--"):
                raise ConfigError("--config needs a file path: --config FILE.")
            config_path = cli_args[i + 1]
            del cli_args[i : i + 2]
            break
        if config_path is None and arg.startswith("--config="):
            config_path = arg[len("--config="):]
            del cli_args[i]
            break
    values: dict[str, Any] = read_yaml(config_path) if config_path else {}
    if values:
        check_value_types(parser, values, source=config_path)
    if overrides:
        flat = flatten_sections(overrides, source="overrides")
        check_keys(flat, source="overrides")
        check_value_types(parser, flat, source="overrides")
        values.update(flat)
    parser.set_defaults(**values)
    # argparse does not know which CLI flags are unknown ahead of time: report them with suggestions.
    namespace, unknown = parser.parse_known_args(cli_args)
    if unknown:
        flags = [a[2:].split("=")[0].replace("-", "_") for a in unknown if a.startswith("--")]
        check_keys(flags or unknown, source="command line")
        raise ConfigError(f"command line: unexpected arguments {unknown}.")
    if overrides:  # overrides beat CLI flags
        for key, value in flatten_sections(overrides, source="overrides").items():
            setattr(namespace, key, value)
    kwargs = {k: v for k, v in vars(namespace).items() if k != "config"}
    try:
        return DistillationConfig(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # TrainingArguments' own validation
        raise ConfigError(str(exc)) from None
