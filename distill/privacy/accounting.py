"""Privacy accounting with opacus' accountants (RDP or PRV), and its state for checkpoints.

The accountant's history is a list of ``(noise_multiplier, sample_rate, steps)`` entries, one per
constant-parameter stretch of training. It is saved in every checkpoint (``privacy_state.json``) and restored
on resume, so a resumed run continues the same ε curve.

**δ.** The default is ``δ = min(1e-5, 1 / (N · ln N))`` for ``N`` records (:func:`default_delta`). δ bounds the
probability that the guarantee fails outright; the mechanism "publish each record with probability δ" is
(0, δ)-DP and leaks ``N·δ`` records in expectation, so δ must be well below ``1/N``: at ``1/(N ln N)`` the
expected number of records exposed that way is ``1/ln N < 1`` and shrinks as ``N`` grows, and ``1e-5`` (Abadi et
al. 2016) caps it on small data sets. A ``dp_delta ≥ 1/N`` is an error unless ``dp_allow_large_delta: true``.

**Sampling.** With Poisson sampling (``dp_poisson_sampling: true``) ε uses amplification by subsampling at rate
``q``. Shuffled fixed-size batches (``false``) are not Poisson-sampled, and this module does not claim any
amplification for them: every step is accounted at ``q = 1`` — each step is a Gaussian mechanism with
sensitivity ``C`` in every record (a record outside the batch contributes 0), composed over all steps. This is
sound and very conservative (:func:`accounted_sample_rate`).

**Calibration.** :func:`calibrate_noise` bisects ``log σ`` with a relative tolerance, so any finite target —
``1e15`` included — resolves in a bounded number of accountant calls (opacus' own search uses an absolute ε
tolerance and never terminates for huge targets).

**Speed.** RDP composes additively: a stretch of ``k`` steps at (σ, q) has ``k`` times one step's RDP at every order,
which is how opacus' ``compute_rdp`` computes it. One step's RDP at opacus' orders (pure-Python series at the
fractional orders: about 0.15 s on a 2-core CPU) is computed once per (σ, q) and kept (:func:`rdp_per_step`); ε of
any history is then opacus' ``get_privacy_spent`` on the sum — the same floating-point operations as opacus'
``RDPAccountant.get_epsilon``, so the same ε bit for bit (tests/test_privacy_accounting.py), and the budget search,
the per-step budget check and the logged ε no longer recompute it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from functools import lru_cache

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis

from ..errors import ConfigError
from ..outputs import PRIVACY_STATE_FILENAME


#: PRV is only asked for ε where RDP gives at most this: far beyond it PRV's grid explodes (memory), and the
#: RDP bound — also a valid upper bound on ε — is reported instead.
PRV_MAX_EPSILON = 50.0


def epsilon_of_history(history: list, delta: float, accountant: str = "rdp") -> float:
    """ε after the steps in ``history`` (``(σ, q, steps)`` entries) at ``delta``."""
    history = [tuple(h) for h in history if int(h[2]) > 0]
    if not history:
        return 0.0
    eps = rdp_epsilon(history, delta)
    if accountant == "rdp" or not math.isfinite(eps) or eps > PRV_MAX_EPSILON:
        return eps
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


@lru_cache(maxsize=1024)
def rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """One Poisson-sampled Gaussian step's RDP at opacus' default orders (read-only; computed once per (σ, q))."""
    rdp = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                   orders=RDPAccountant.DEFAULT_ALPHAS)
    rdp.setflags(write=False)
    return rdp


def rdp_epsilon(history: list, delta: float) -> float:
    """ε of an RDP accountant with this ``(σ, q, steps)`` history at ``delta``: opacus' ``RDPAccountant.get_epsilon``
    with each stretch's RDP as ``steps`` × :func:`rdp_per_step` (what opacus' ``compute_rdp`` computes)."""
    rdp = sum([rdp_per_step(float(s), float(q)) * int(k) for s, q, k in history])
    eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


def compute_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                    accountant: str = "rdp") -> float:
    """ε after ``steps`` Poisson-sampled Gaussian steps (σ, q) at ``delta``."""
    return epsilon_of_history([(noise_multiplier, sample_rate, steps)], delta, accountant)


#: The noise search range: below SIGMA_MIN the accountants lose precision; above SIGMA_MAX a target is unreachable.
SIGMA_MIN, SIGMA_MAX = 1e-6, 1e6
#: ε above this is no meaningful guarantee (a warning names the noise it means).
WEAK_EPSILON = 10.0


def default_delta(num_records: int) -> float:
    """``min(1e-5, 1 / (N ln N))``: well below ``1/N`` (see the module docstring)."""
    n = max(int(num_records), 2)
    return min(1e-5, 1.0 / (n * math.log(n)))


def resolve_delta(delta: float | None, num_records: int, allow_large: bool = False) -> float:
    """The run's δ: the default rule when ``delta`` is None; a ``δ ≥ 1/N`` is a ConfigError unless allowed."""
    if delta is None:
        return default_delta(num_records)
    if delta >= 1.0 / num_records and not allow_large:
        raise ConfigError(
            f"dp_delta={delta:.3g} is not below 1/N = 1/{num_records} = {1.0 / num_records:.3g}: a mechanism that "
            f"publishes each record with probability delta satisfies it. Leave dp_delta unset (default "
            f"{default_delta(num_records):.3g} = min(1e-5, 1/(N ln N))), or set dp_allow_large_delta: true."
        )
    return float(delta)


def accounted_sample_rate(sample_rate: float, poisson: bool) -> float:
    """The rate the accountant uses: ``q`` under Poisson sampling, ``1`` (no amplification) otherwise."""
    return float(sample_rate) if poisson else 1.0


def _safe_epsilon(sigma: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    """ε, or ∞ where the accountant fails numerically (PRV at tiny σ), so the search moves to more noise."""
    try:
        with warnings.catch_warnings():
            # probes at extreme σ hit the ends of the RDP orders: a warning about a probe, not the reported ε
            warnings.filterwarnings("ignore", message="Optimal order is the")
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            eps = compute_epsilon(sigma, sample_rate, steps, delta, accountant)
    except (ValueError, OverflowError, MemoryError, FloatingPointError):
        return math.inf
    return eps if math.isfinite(eps) else math.inf


@lru_cache(maxsize=256)
def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "rdp", rel_tol: float = 1e-3) -> float:
    """The smallest σ (to a relative ``rel_tol``) that keeps ε ≤ target after ``steps`` steps (a pure function of
    its arguments: kept, so runs of one sweep with the same budget search once).

    Geometric bisection on σ in ``[SIGMA_MIN, SIGMA_MAX]``: at most ~60 accountant calls for any finite target.
    A target met even at ``SIGMA_MIN`` returns ``SIGMA_MIN`` (ε then lies below the target).
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"dp_target_epsilon must be a finite number > 0, got {target_epsilon}.")

    def fits(sigma: float) -> bool:
        return _safe_epsilon(sigma, sample_rate, steps, delta, accountant) <= target_epsilon

    hi = 1.0
    while not fits(hi):
        hi *= 4
        if hi > SIGMA_MAX:
            raise ConfigError(
                f"dp_target_epsilon={target_epsilon} cannot be reached in {steps} steps at sample rate "
                f"{sample_rate:.4g} (delta={delta:.3g}): even noise_multiplier {SIGMA_MAX:.0e} exceeds it. Raise "
                "dp_target_epsilon, train fewer steps (max_steps / num_train_epochs) or use a smaller batch."
            )
    lo = hi / 4
    while fits(lo):
        hi, lo = lo, lo / 4
        if hi <= SIGMA_MIN:
            return SIGMA_MIN
    while hi / lo > 1 + rel_tol:  # fits(hi), not fits(lo)
        mid = math.sqrt(lo * hi)
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def describe_noise(noise_multiplier: float, max_grad_norm: float, expected_batch_size: float,
                   epsilon: float | None) -> str | None:
    """A warning naming the noise a weak budget means (None when ε ≤ WEAK_EPSILON)."""
    if epsilon is not None and math.isfinite(epsilon) and epsilon <= WEAK_EPSILON:
        return None
    eps = "infinite" if epsilon is None or not math.isfinite(epsilon) else f"{epsilon:.4g}"
    return (f"epsilon {eps} is no meaningful privacy guarantee (epsilon > {WEAK_EPSILON:g}): it means noise "
            f"multiplier sigma={noise_multiplier:.3g}, i.e. noise std {noise_multiplier * max_grad_norm:.3g} on a sum "
            f"of ~{expected_batch_size:g} clipped gradients of norm <= {max_grad_norm:g} "
            f"(std {noise_multiplier * max_grad_norm / max(expected_batch_size, 1):.3g} on their mean).")


def max_steps_within(target_epsilon: float, noise_multiplier: float, sample_rate: float, delta: float,
                     accountant: str = "rdp", done_history: list | None = None, limit: int = 10_000_000) -> int:
    """How many more steps at (σ, q) keep ε ≤ target, after the steps already in ``done_history``."""
    history = list(done_history or [])

    def eps(k: int) -> float:
        return epsilon_of_history(history + [(noise_multiplier, sample_rate, k)], delta, accountant)

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
        return epsilon_of_history(self._acc.history, self.delta, self.mechanism)

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
        path = os.path.join(directory, PRIVACY_STATE_FILENAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({**self.state_dict(), **(extra or {})}, fh, indent=2)
        os.replace(tmp, path)
        return path

    @staticmethod
    def read(directory: str) -> dict | None:
        path = os.path.join(directory, PRIVACY_STATE_FILENAME)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
