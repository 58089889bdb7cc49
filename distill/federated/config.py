"""`FederatedConfig`: the federated keys of a run (the ``federated:`` section of a YAML config).

The rest of the YAML is an ordinary :class:`~distill.distillation.config.DistillationConfig`: it describes the *local* step
every selected device runs (teacher, student, loss, CDA/perturbation, optional local DP-SGD, batch size, learning
rate). ``max_steps`` is replaced by ``local_steps`` on the devices.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..distillation.config_loader import check_fields, check_keys
from ..errors import ConfigError

SECTION = "federated"

Partition = Literal["iid", "quantity", "power_law", "attribute"]
PartitionAttribute = Literal["gender", "occupation"]
Selection = Literal["uniform", "activity"]
Setting = Literal["static", "continual"]


def _range(default, text: str):
    return field(default=default, metadata={"range": text})


@dataclass
class FederatedConfig:
    """The ``federated:`` section. Every field is checked from its declaration (type, ``Literal`` choice,
    ``metadata["range"]``) by :func:`~distill.distillation.config_loader.check_fields`; the cross-field rules
    follow in ``__post_init__``.

    Args:
        > Devices and rounds
        num_devices, devices_per_round, num_rounds, local_steps: N devices, K selected a round, the rounds, and
            the local optimizer steps of a selected device.
        > Data on the devices
        partition, partition_alpha, partition_attribute, min_records, setting, storage: how the corpus is split
            and whether devices receive new records every round.
        > Selection
        selection, activity_exponent: uniform, or by activity.
        > Central DP
        central_dp, central_dp_noise_multiplier, central_dp_clipping_norm, central_dp_delta: user-level DP of the
            averaged update.
        > Server evaluation and simulation
        eval_max_records, eval_occupations, client_cpus, seed.
    """

    num_devices: int = _range(3, "[1, inf)")
    """N: virtual devices, each holding one partition of the training corpus."""
    devices_per_round: int = _range(2, "[1, inf)")
    """K: devices the server selects to train in each round."""
    num_rounds: int = _range(2, "[1, inf)")
    """Rounds of select → local training → weighted averaging → server-side evaluation."""
    local_steps: int = _range(5, "[1, inf)")
    """Optimizer steps of local distillation on a selected device (replaces max_steps)."""
    partition: Partition = "iid"
    """How the corpus is split: iid, quantity (Dirichlet sizes), power_law (sizes ∝ rank^-alpha), attribute."""
    partition_alpha: float = _range(0.5, "[0, inf)")
    """Dirichlet concentration α (quantity, attribute) or the power-law exponent (power_law)."""
    partition_attribute: PartitionAttribute = "gender"
    """Attribute of a text for the attribute skew: gender (of its words) or occupation (named in it)."""
    min_records: int = _range(2, "[1, inf)")
    """Every device gets at least this many records."""
    selection: Selection = "uniform"
    """uniform, or activity: P(device) ∝ (records it holds now) ** activity_exponent."""
    activity_exponent: float = _range(1.0, "[0, inf)")
    """γ of activity selection (0 is uniform)."""
    setting: Setting = "static"
    """static (all records on the device from the start) or continual (new records every round)."""
    storage: int | None = _range(None, "[1, inf)")
    """continual: a device keeps at most this many records, deleting the oldest first (None: no limit)."""
    central_dp: bool = False
    """User-level central DP: clip each device's update, add Gaussian noise to the average (Flower's wrapper)."""
    central_dp_noise_multiplier: float = _range(1.0, "(0, inf)")
    """σ of central DP: noise std σ·C/K on the average of K clipped updates."""
    central_dp_clipping_norm: float = _range(1.0, "(0, inf)")
    """C: L2 bound on each device's model update (new − global weights)."""
    central_dp_delta: float | None = _range(None, "(0, 1)")
    """δ of the central guarantee (default 1 / (10·N))."""
    eval_max_records: int | None = _range(200, "[1, inf)")
    """Held-out records the server evaluates perplexity on each round (None: all)."""
    eval_occupations: list[str] | None = None
    """Occupations of the server's fairness prompts (default: the fairness_prompts of the config)."""
    client_cpus: float = _range(1.0, "(0, inf)")
    """CPU cores Flower's simulation engine reserves for one device (concurrency = cores / client_cpus)."""
    seed: int | None = None
    """Seed of the partition, the streams and the server's selection (default: the config's seed)."""

    def __post_init__(self):
        check_fields(self, prefix=SECTION + ".")
        if self.devices_per_round > self.num_devices:
            raise ConfigError(f"federated.devices_per_round ({self.devices_per_round}) cannot exceed num_devices "
                              f"({self.num_devices}).")
        if self.storage is not None and self.setting != "continual":
            raise ConfigError("federated.storage only applies to setting: continual (static devices keep all "
                              "their records): remove it or set setting: continual.")

    @property
    def delta(self) -> float:
        return self.central_dp_delta if self.central_dp_delta is not None else 1.0 / (10 * self.num_devices)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, source: str = "config") -> FederatedConfig:
        raw = dict(raw or {})
        known = [f.name for f in dataclasses.fields(cls)]
        check_keys(raw, known, source, what="federated key", help_hint=f"Known: {', '.join(known)}.")
        return cls(**raw)


#: Keys of the training config that may name a local path (made absolute for Flower's workers).
LOCAL_PATH_KEYS = ("teacher_model_name_or_path", "student_model_name_or_path", "tokenizer_name_or_path",
                   "train_file", "validation_file")


def absolute_local_paths(args) -> None:
    """Flower's simulation workers may start in another directory: make the config's local paths absolute."""
    for key in LOCAL_PATH_KEYS:
        value = getattr(args, key)
        if value and os.path.exists(value):
            setattr(args, key, os.path.abspath(value))


def load_federated_config(config_paths, cli_args=None, compare: bool = False):
    """``(DistillationConfig, FederatedConfig)`` from the YAML file(s) (training keys + a ``federated:``
    section) and ``--key value`` flags (a federated key's flag sets the section). With ``compare`` the setting is
    the comparison's business: ``storage`` is accepted with any setting."""
    from ..distillation.config import load_config_sections

    overrides = {SECTION: {"setting": "continual"}} if compare else None
    args, sections = load_config_sections(config_paths, cli_args, overrides, sections={SECTION: FederatedConfig})
    absolute_local_paths(args)
    return args, sections[SECTION]
