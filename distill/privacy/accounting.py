"""Privacy accounting with opacus' accountants (RDP or PRV), and its state for checkpoints.

The accountant's history is a list of ``(noise_multiplier, sample_rate, steps)`` entries, one per
constant-parameter stretch of training. It is saved in every checkpoint (``privacy_state.json``) and restored
on resume, so a resumed run continues the same ε curve.
"""

from __future__ import annotations

import json
import os
import warnings

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from ..errors import ConfigError

STATE_FILENAME = "privacy_state.json"


def compute_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                    accountant: str = "rdp") -> float:
    """ε after ``steps`` Poisson-sampled Gaussian steps (σ, q) at ``delta``."""
    if steps <= 0:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "rdp") -> float:
    """The smallest σ (within opacus' 0.01 ε tolerance) that keeps ε ≤ target after ``steps`` steps."""
    try:
        with warnings.catch_warnings():
            # the search probes very large σ, whose optimal RDP order is the largest one: that warning is about
            # a probe, not about the ε finally reported (compute_epsilon still warns for that one)
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=steps, accountant=accountant))
    except ValueError:
        raise ConfigError(
            f"dp_target_epsilon={target_epsilon} cannot be reached in {steps} steps at sample rate {sample_rate:.4g} "
            f"(delta={delta:.3g}): even noise_multiplier 1e6 exceeds it. Raise dp_target_epsilon, train fewer steps "
            "(max_steps / num_train_epochs) or use a smaller batch."
        ) from None


def max_steps_within(target_epsilon: float, noise_multiplier: float, sample_rate: float, delta: float,
                     accountant: str = "rdp", done_history: list | None = None, limit: int = 10_000_000) -> int:
    """How many more steps at (σ, q) keep ε ≤ target, after the steps already in ``done_history``."""
    history = list(done_history or [])

    def eps(k: int) -> float:
        acc = create_accountant(mechanism=accountant)
        acc.history = history + ([(noise_multiplier, sample_rate, k)] if k > 0 else [])
        return float(acc.get_epsilon(delta=delta)) if acc.history else 0.0

    if eps(1) > target_epsilon:
        return 0
    lo, hi = 1, 2
    while hi < limit and eps(hi) <= target_epsilon:
        lo, hi = hi, hi * 2
    if hi >= limit:
        return limit
    while hi - lo > 1:  # eps(lo) <= target < eps(hi)
        mid = (lo + hi) // 2
        if eps(mid) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    return lo


class PrivacyAccountant:
    """An opacus accountant that knows δ and can be saved/restored as JSON."""

    def __init__(self, mechanism: str, delta: float):
        self.mechanism = mechanism
        self.delta = delta
        self._acc = create_accountant(mechanism=mechanism)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [tuple(h) for h in self._acc.history]

    @property
    def steps(self) -> int:
        return sum(int(h[2]) for h in self._acc.history)

    def step(self, noise_multiplier: float, sample_rate: float) -> None:
        self._acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    def epsilon(self) -> float:
        if not self._acc.history:
            return 0.0
        return float(self._acc.get_epsilon(delta=self.delta))

    # ---- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"mechanism": self.mechanism, "delta": self.delta, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mechanism") != self.mechanism:
            raise ConfigError(f"The checkpoint was accounted with dp_accountant={state.get('mechanism')}, this run "
                              f"uses {self.mechanism}: resume with the same dp_accountant.")
        if abs(float(state.get("delta", self.delta)) - self.delta) > 1e-15 * max(1.0, self.delta):
            raise ConfigError(f"The checkpoint's privacy delta ({state.get('delta')}) differs from this run's "
                              f"({self.delta}): resume with the same dp_delta.")
        self._acc.history = [(float(s), float(q), int(k)) for s, q, k in state["history"]]

    def save(self, directory: str, extra: dict | None = None) -> str:
        path = os.path.join(directory, STATE_FILENAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({**self.state_dict(), **(extra or {})}, fh, indent=2)
        os.replace(tmp, path)
        return path

    @staticmethod
    def read(directory: str) -> dict | None:
        path = os.path.join(directory, STATE_FILENAME)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
