"""`FederatedConfig`: the federated keys of a run (the ``federated:`` section of a YAML config).

The rest of the YAML is an ordinary :class:`~distill.distillation.config.DistillationConfig`: it describes the *local* step
every selected device runs (teacher, student, loss, CDA/perturbation, optional local DP-SGD, batch size, learning
rate). ``max_steps`` is replaced by ``local_steps`` on the devices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .partition import ATTRIBUTES, PARTITIONS
from .selection import SELECTIONS
from .storage import SETTINGS

SECTION = "federated"


@dataclass
class FederatedConfig:
    num_devices: int = 3
    """N: virtual devices, each holding one partition of the training corpus."""
    devices_per_round: int = 2
    """K: devices the server selects to train in each round."""
    num_rounds: int = 2
    """Rounds of select → local training → weighted averaging → server-side evaluation."""
    local_steps: int = 5
    """Optimizer steps of local distillation on a selected device (replaces max_steps)."""
    partition: str = "iid"
    """How the corpus is split: iid, quantity (Dirichlet sizes), power_law (sizes ∝ rank^-alpha), attribute."""
    partition_alpha: float = 0.5
    """Dirichlet concentration α (quantity, attribute) or the power-law exponent (power_law)."""
    partition_attribute: str = "gender"
    """Attribute of a text for the attribute skew: gender (of its words) or occupation (named in it)."""
    min_records: int = 2
    """Every device gets at least this many records."""
    selection: str = "uniform"
    """uniform, or activity: P(device) ∝ (records it holds now) ** activity_exponent."""
    activity_exponent: float = 1.0
    """γ of activity selection (0 is uniform)."""
    setting: str = "static"
    """static (all records on the device from the start) or continual (new records every round)."""
    storage: int | None = None
    """continual: a device keeps at most this many records, deleting the oldest first (None: no limit)."""
    central_dp: bool = False
    """User-level central DP: clip each device's update, add Gaussian noise to the average (Flower's wrapper)."""
    central_dp_noise_multiplier: float = 1.0
    """σ of central DP: noise std σ·C/K on the average of K clipped updates."""
    central_dp_clipping_norm: float = 1.0
    """C: L2 bound on each device's model update (new − global weights)."""
    central_dp_delta: float | None = None
    """δ of the central guarantee (default 1 / (10·N))."""
    eval_max_records: int | None = 200
    """Held-out records the server evaluates perplexity on each round (None: all)."""
    eval_occupations: list[str] | None = None
    """Occupations of the server's fairness prompts (default: the fairness_prompts of the config)."""
    client_cpus: float = 1.0
    """CPU cores Flower's simulation engine reserves for one device (concurrency = cores / client_cpus)."""
    seed: int | None = None
    """Seed of the partition, the streams and the server's selection (default: the config's seed)."""

    def __post_init__(self):
        for name in ("num_devices", "devices_per_round", "num_rounds", "local_steps", "min_records"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"federated.{name} must be an integer >= 1, got {value!r}.")
        if self.devices_per_round > self.num_devices:
            raise ConfigError(f"federated.devices_per_round ({self.devices_per_round}) cannot exceed num_devices "
                              f"({self.num_devices}).")
        _choice("partition", self.partition, PARTITIONS)
        _choice("partition_attribute", self.partition_attribute, ATTRIBUTES)
        _choice("selection", self.selection, SELECTIONS)
        _choice("setting", self.setting, SETTINGS)
        if not (math.isfinite(self.partition_alpha) and self.partition_alpha >= 0):
            raise ConfigError(f"federated.partition_alpha must be a finite number >= 0, got {self.partition_alpha}.")
        if not (math.isfinite(self.activity_exponent) and self.activity_exponent >= 0):
            raise ConfigError(f"federated.activity_exponent must be >= 0, got {self.activity_exponent}.")
        if self.storage is not None and self.storage < 1:
            raise ConfigError(f"federated.storage must be >= 1 record (or null), got {self.storage}.")
        if self.storage is not None and self.setting != "continual":
            raise ConfigError("federated.storage only applies to setting: continual (static devices keep all "
                              "their records): remove it or set setting: continual.")
        if self.central_dp:
            if not self.central_dp_noise_multiplier > 0:
                raise ConfigError("federated.central_dp_noise_multiplier must be > 0 with central_dp.")
            if not self.central_dp_clipping_norm > 0:
                raise ConfigError("federated.central_dp_clipping_norm must be > 0 with central_dp.")
            if self.central_dp_delta is not None and not 0 < self.central_dp_delta < 1:
                raise ConfigError(f"federated.central_dp_delta must be in (0, 1), got {self.central_dp_delta}.")
        if self.client_cpus <= 0:
            raise ConfigError(f"federated.client_cpus must be > 0, got {self.client_cpus}.")

    @property
    def delta(self) -> float:
        return self.central_dp_delta if self.central_dp_delta is not None else 1.0 / (10 * self.num_devices)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, source: str = "config") -> FederatedConfig:
        raw = dict(raw or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in raw if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
                hints.append(f"'{key}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise ConfigError(f"{source}: unknown federated key(s) {'; '.join(hints)}. Known: {', '.join(known)}.")
        return cls(**raw)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"federated.{name} must be one of {', '.join(choices)}; got {value!r}.")
