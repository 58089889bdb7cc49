"""`DistillationConfig`: every knob of a distillation run, in the style of TRL's trainer configs.

One dataclass that extends :class:`transformers.TrainingArguments`. Each field declares its type (``Literal``
for a choice) and, for a number, its allowed range once in ``metadata["range"]`` (``"[1, inf)"``, ``"(0, 1)"``);
:func:`~distill.distillation.config_loader.check_fields` checks every field from these declarations in
``__post_init__``, and the cross-field rules (loss weights, DP, teacher cache) follow. YAML files and
command-line flags are read by :mod:`distill.distillation.config_loader`; :func:`load_config` binds it here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import yaml
from transformers import TrainingArguments

from ..errors import ConfigError
from . import config_loader
from .parallel import check_deepspeed_setting

#: YAML sections that are flattened into ``{section}_{key}`` fields (``dp: {enabled: true}``).
SECTIONS = ("dp", "fairness")

TeacherDtype = Literal["auto", "float32", "bfloat16", "float16"]
KDLoss = Literal["forward_kl", "reverse_kl", "jsd", "tvd", "skew_forward_kl", "skew_reverse_kl"]
CacheDtype = Literal["float16", "float32"]
CdaMode = Literal["none", "one_sided", "two_sided"]
PerturbationMode = Literal["none", "mean", "max", "interpolate"]
DPAccountant = Literal["rdp", "prv"]
DPMode = Literal["fast", "hooks", "ghost"]

TEACHER_DTYPES = get_args(TeacherDtype)
DP_ACCOUNTANTS = get_args(DPAccountant)
DP_MODES = get_args(DPMode)
CACHE_DTYPES = get_args(CacheDtype)
#: Never written to distill_config.yaml (it is uploaded with the model by `distill push`).
SECRET_KEYS = ("hub_token",)


@dataclass
class DistillationConfig(TrainingArguments):
    r"""Training arguments for :class:`distill.DistillationTrainer`: all of :class:`transformers.TrainingArguments`
    plus the keys below (each field's ``help`` has the details, ``distill train --help`` lists them all).

    Args:
        > Models
        teacher_model_name_or_path, teacher_dtype: the teacher (Hub name, local directory or ``builtin:tiny-gpt2``)
            and the dtype of its weights.
        student_model_name_or_path, student_num_layers, student_layers: start from a student checkpoint, or
            build one from the teacher with that depth / those teacher blocks.
        tokenizer_name_or_path, trust_remote_code, allow_pickle: tokenizer, and what loading may execute.

        > Distillation loss
        temperature, alpha_kd, alpha_lm, alpha_cos: ``alpha_kd·T²·D(teacher‖student) + alpha_lm·CE +
            alpha_cos·(1 − cos)`` at temperature ``T``.
        loss_chunk_size: positions per chunk of the fused loss (``auto``, a number, or ``off``).
        compile_loss: the forward-KL term through ``torch.compile``.
        kd_loss, kd_beta, kd_skew_alpha: the divergence ``D`` and its parameters.
        teacher_cache, teacher_cache_top_k, teacher_cache_dtype, teacher_cache_shard_size: train from (or build)
            a cache of the teacher's top-k log-probabilities.

        > Data
        dataset_name, dataset_config_name, dataset_split, train_file, validation_file, text_column: the corpus.
        block_size, validation_split_percentage, packing, max_train_samples, max_eval_samples,
            preprocessing_num_workers, overwrite_output_dir: how it is cut, held out and packed.

        > Counterfactual role reversal
        cda, cda_prob, cda_names, cda_pairs_file: counterfactual data augmentation.
        perturbation, perturbation_lambda: the teacher-prediction perturbation.

        > Differential privacy
        dp_enabled, dp_target_epsilon, dp_noise_multiplier, dp_delta, dp_allow_large_delta, dp_reproducible,
            dp_max_grad_norm, dp_accountant, dp_poisson_sampling, dp_mode: DP-SGD of the student.
        canary_repeats, canary_seed: a secret canary for privacy audits.

        > Fairness evaluation
        fairness_enabled, fairness_metrics, fairness_prompts, fairness_num_samples, fairness_max_new_tokens,
            fairness_max_prompts_per_group: metrics logged at each evaluation.

        > Redeclared TrainingArguments keys (same defaults, with a declared range)
        per_device_train_batch_size, per_device_eval_batch_size, gradient_accumulation_steps, learning_rate,
            weight_decay, max_grad_norm, num_train_epochs, max_steps (``-1``: train for num_train_epochs).
    """

    # ---- TrainingArguments keys redeclared with their range (defaults unchanged) ---------------------------
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Batch size per device for training.", "range": "[1, inf)"})
    per_device_eval_batch_size: int = field(
        default=8, metadata={"help": "Batch size per device for evaluation.", "range": "[1, inf)"})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches accumulated into one optimizer step.", "range": "[1, inf)"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "Initial learning rate of the optimizer.", "range": "[0, inf)"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "Weight decay coefficient of the optimizer.", "range": "[0, inf)"})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient clipping norm (0 disables clipping; DP-SGD clips per record "
                               "with dp_max_grad_norm instead).", "range": "[0, inf)"})
    num_train_epochs: float = field(
        default=3.0, metadata={"help": "Training epochs (used when max_steps is -1 or 0).", "range": "[0, inf)"})
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps to train for; -1 (the default) trains for num_train_epochs "
                              "instead.", "range": "[-1, inf)",
                              "range_hint": "-1 means: train for num_train_epochs"})

    # ---- models -------------------------------------------------------------------------------
    teacher_model_name_or_path: str = field(
        default="gpt2",
        metadata={"help": "Teacher causal LM: a Hub name, a local directory, or 'builtin:tiny-gpt2'."},
    )
    teacher_dtype: TeacherDtype = field(
        default="auto",
        metadata={"help": "Teacher weights dtype. 'auto' keeps float32 on CPU."},
    )
    student_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from this student checkpoint instead of building one from the teacher."},
    )
    student_num_layers: int | None = field(
        default=None,
        metadata={"range": "[1, inf)", "help": "Depth of a student built from the teacher (default: half the teacher's depth)."},
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
    temperature: float = field(default=2.0, metadata={"range": "(0, inf)", "help": "Softmax temperature T of the KD term."})
    alpha_kd: float = field(default=1.0, metadata={"range": "[0, inf)", "help": "Weight of T^2 * KL(teacher || student)."})
    alpha_lm: float = field(default=1.0, metadata={"range": "[0, inf)", "help": "Weight of the student's next-token CE."})
    alpha_cos: float = field(
        default=0.0, metadata={"range": "[0, inf)", "help": "Weight of 1 - cos(h_student, h_teacher) on last hidden states."}
    )

    loss_chunk_size: int | Literal["auto", "off"] = field(
        default="auto",
        metadata={"range": "[1, inf)", "help": "How the loss meets the vocabulary (same loss and gradients either way): "
                  "'auto' runs the output layers over chunks of positions (~256 MiB of float32 logits a chunk on "
                  "GPU, ~32 MiB on CPU) so no [batch, length, vocab] tensor is held (faster and leaner on a GPU), "
                  "except on a CPU where the plain loss on full logits is faster and its ~8 float32 [batch, length, "
                  "vocab] copies fit in a quarter of this process's share of MemAvailable; a number: always chunked, "
                  "this many positions a chunk; 'off': always the plain loss."},
    )
    compile_loss: bool = field(
        default=False,
        metadata={"help": "Run the forward-KL term and its gradient through torch.compile (the same numbers to float "
                  "rounding; fewer passes over the vocabulary). Each process compiles once per batch shape, seconds "
                  "to tens of seconds, so it pays off over long runs, not short ones; where compilation fails, one "
                  "warning and the eager loss."},
    )

    # ---- KD divergence and teacher cache (distill.divergences, distill.distillation.teacher_cache) ----------------
    kd_loss: KDLoss = field(
        default="forward_kl",
        metadata={"help": "Divergence D of the KD term T^2 * D(teacher || student)."},
    )
    kd_beta: float = field(
        default=0.5, metadata={"range": "[0, 1]", "help": "jsd: beta of TRL GKD's generalized JSD (0 = forward KL, 1 = reverse KL)."}
    )
    kd_skew_alpha: float = field(
        default=0.1, metadata={"range": "[0, 1)", "help": "skew_forward_kl / skew_reverse_kl: the skew alpha, in [0, 1)."}
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={"help": "Train from a teacher cache written by `distill cache-teacher` (no teacher forward)."},
    )
    teacher_cache_top_k: int | None = field(
        default=None,
        metadata={"range": "[1, inf)", "help": "Top-k entries stored per position by `distill cache-teacher` (default 64); when "
                  "training from a cache, the k it must hold."},
    )
    teacher_cache_dtype: CacheDtype = field(
        default="float16", metadata={"help": "Dtype of the cached log-probabilities."}
    )
    teacher_cache_shard_size: int = field(
        default=1000, metadata={"range": "[1, inf)", "help": "Training rows per cache shard (the unit of resuming a cache build)."}
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
    block_size: int = field(default=128, metadata={"range": "[2, inf)", "help": "Length of the packed training blocks."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"range": "[0, 100)", "help": "Held-out share of the training data when there is no validation set."}
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Pack documents into full blocks (true) or keep one record per row (false; DP "
                  "with records as the privacy unit needs false)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"range": "[1, inf)", "help": "Truncate the raw training set."})
    max_eval_samples: int | None = field(default=None, metadata={"range": "[1, inf)", "help": "Truncate the raw validation set."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"range": "[1, inf)", "help": "Workers for `map`."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into a non-empty output_dir (never needed to resume)."},
    )

    # ---- counterfactual role reversal -----------------------------------------------------------------
    cda: CdaMode = field(
        default="none",
        metadata={"help": "Counterfactual data augmentation."},
    )
    cda_prob: float = field(
        default=0.5, metadata={"range": "[0, 1]", "help": "one_sided: probability that a gendered example is swapped."}
    )
    cda_names: bool = field(default=False, metadata={"help": "Also swap first names (off by default)."})
    cda_pairs_file: str | None = field(
        default=None, metadata={"help": "Your own gendered word pairs (one 'male<TAB>female' pair a line)."}
    )
    perturbation: PerturbationMode = field(
        default="none",
        metadata={"help": "Teacher-prediction perturbation."},
    )
    perturbation_lambda: float = field(
        default=0.5, metadata={"range": "[0, 1]", "help": "interpolate: weight of the role-reversed teacher prediction."}
    )

    # ---- differential privacy ---------------------------------------------------------------------------
    dp_enabled: bool = field(default=False, metadata={"help": "Train the student with DP-SGD."})
    dp_target_epsilon: float | None = field(
        default=None, metadata={"range": "(0, inf)", "help": "Privacy budget: without dp_noise_multiplier the noise is calibrated to "
                                "reach it at the end of training; with it, training stops before exceeding it."}
    )
    dp_noise_multiplier: float | None = field(
        default=None, metadata={"range": "[0, inf)", "help": "Noise multiplier sigma (alternative to dp_target_epsilon)."}
    )
    dp_delta: float | None = field(
        default=None, metadata={"range": "(0, 1)", "help": "Delta (default: min(1e-5, 1/(N ln N)) for N records; must be < 1/N unless "
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
    dp_max_grad_norm: float = field(default=1.0, metadata={"range": "(0, inf)", "help": "Per-record gradient clipping norm C."})
    dp_accountant: DPAccountant = field(default="rdp", metadata={"help": "Privacy accountant."})
    dp_poisson_sampling: bool = field(
        default=True, metadata={"help": "Poisson-sample the records of each logical batch (what the accountant "
                                "assumes); false: shuffled fixed-size batches."}
    )
    dp_mode: DPMode = field(
        default="fast",
        metadata={"help": "Per-sample gradient method. 'fast' is the single-backward "
                  "book-keeping method; 'hooks'/'ghost' are opacus' own modes."},
    )
    canary_repeats: int = field(
        default=0, metadata={"range": "[0, inf)", "help": "Insert a random secret canary this many times (privacy audits)."}
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
    fairness_num_samples: int = field(default=1, metadata={"range": "[1, inf)", "help": "Generations per prompt."})
    fairness_max_new_tokens: int = field(default=20, metadata={"range": "[1, inf)", "help": "Tokens generated per prompt."})
    fairness_max_prompts_per_group: int | None = field(
        default=None, metadata={"range": "[1, inf)", "help": "Limit prompts per group (BOLD) or per profession."}
    )

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "runs/distill"
        # every field this class declares: its type, Literal choices and metadata["range"]
        config_loader.check_fields(self, names=list(DistillationConfig.__annotations__))
        if self.max_steps <= 0 and self.num_train_epochs == 0:
            raise ConfigError(f"Nothing to train: max_steps is {self.max_steps} and num_train_epochs is 0. Set "
                              "max_steps to a number of steps > 0, or num_train_epochs > 0.")
        check_deepspeed_setting(self)  # before TrainingArguments imports DeepSpeed
        super().__post_init__()
        self._check_kd_and_cache()
        if self.alpha_kd + self.alpha_lm + self.alpha_cos == 0:
            raise ConfigError("alpha_kd, alpha_lm and alpha_cos are all 0: set at least one of them > 0.")
        if self.student_layers is not None and self.student_num_layers is not None:
            if len(self.student_layers) != self.student_num_layers:
                raise ConfigError(
                    f"student_layers has {len(self.student_layers)} entries but student_num_layers is "
                    f"{self.student_num_layers}: give one of them, or make them agree."
                )
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
            if (self.gradient_checkpointing or getattr(self, "activation_checkpointing", False)) \
                    and self.dp_mode != "fast":
                raise ConfigError(f"dp_mode {self.dp_mode} does not support activation_checkpointing (alias "
                                  "gradient_checkpointing; opacus' hooks see each recomputed forward): use dp_mode: "
                                  "fast, or turn activation_checkpointing off.")
            # per-record clipping (dp_max_grad_norm) replaces global clipping of the (noisy) gradient
            self.max_grad_norm = 0.0

    def _check_kd_and_cache(self) -> None:
        if self.teacher_cache and self.alpha_cos > 0:
            raise ConfigError("teacher_cache stores the teacher's output distribution, not its hidden states, so "
                              "alpha_cos must be 0 when training from a cache: set alpha_cos: 0.")

    def kd_kwargs(self) -> dict[str, Any]:
        """The KD divergence keys of :func:`distill.distillation.losses.distillation_loss` (and how it runs)."""
        return {"kd_loss": self.kd_loss, "kd_beta": self.kd_beta, "kd_skew_alpha": self.kd_skew_alpha,
                "compile_loss": self.compile_loss}

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


def _default_values() -> dict[str, Any]:
    """Field values of a default config, after ``__post_init__`` normalised them."""
    return DistillationConfig().distill_dict(only_non_default=False)


def config_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(DistillationConfig) if f.init]


def own_field_names() -> list[str]:
    """The keys fair-distill adds to :class:`transformers.TrainingArguments`."""
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    return [name for name in config_field_names() if name not in base]


HELP_HINT = "Run `distill train --help` for the full list of keys."


def load_config(config_path: str | list[str] | None = None, cli_args: list[str] | None = None,
                overrides: dict[str, Any] | None = None) -> DistillationConfig:
    """A :class:`DistillationConfig` from YAML file(s), command-line flags and a dict of overrides.

    Precedence: ``overrides`` > ``cli_args`` > YAML files (in order, later wins) > defaults; ``--config FILE``
    may appear in ``cli_args``, several times. See :func:`distill.distillation.config_loader.load`.
    """
    config, _ = load_config_sections(config_path, cli_args, overrides)
    return config


def load_config_sections(config_path=None, cli_args=None, overrides=None,
                         sections: dict[str, type] | None = None) -> tuple[DistillationConfig, dict[str, Any]]:
    """:func:`load_config` with extra YAML sections, each loaded into its own dataclass:
    ``sections={"federated": FederatedConfig}`` -> ``(config, {"federated": FederatedConfig(...)})``."""
    return config_loader.load(DistillationConfig, config_path, cli_args, overrides, flat_sections=SECTIONS,
                              sections=sections, help_hint=HELP_HINT)


def read_yaml(path: str) -> dict[str, Any]:
    """The keys of one YAML config file, sections flattened, checked against :class:`DistillationConfig`."""
    flat, _ = config_loader.split_sections(config_loader.read_yaml_file(path), DistillationConfig, path, SECTIONS, {})
    config_loader.check_keys(flat, config_field_names(), path, help_hint=HELP_HINT)
    return flat
