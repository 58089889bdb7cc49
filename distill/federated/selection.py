"""Which K of the N devices train in a round: ``uniform`` or ``activity`` selection.

Each round every device reports n_i, the number of training records it holds now. Devices with n_i = 0
cannot train and are never selected. Among the others, device i gets the weight

* ``uniform``:  w_i = 1,
* ``activity``: w_i = n_i^γ (``activity_exponent`` γ; γ = 1 is "proportional to the number of samples",
  γ = 0 is uniform),

and p_i = w_i / Σ_j w_j. The server draws K distinct devices by successive sampling (draw one device with
probabilities p, remove it, renormalise, repeat: :meth:`numpy.random.Generator.choice` with
``replace=False``) from its own seeded generator, so a run is reproducible. With K = 1 device i is chosen with
probability p_i exactly; with K > 1 its inclusion probability is
π_i = Σ over ordered draws containing i of Π_k p_{d_k} / (1 − Σ_{l<k} p_{d_l}) (:func:`inclusion_probabilities`
computes it exactly for small N). Both are reported per round.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

SELECTIONS = ("uniform", "activity")


def selection_probabilities(counts: Sequence[int], selection: str = "uniform", exponent: float = 1.0) -> np.ndarray:
    """p_i of every device (0 for devices without records)."""
    counts = np.asarray(counts, dtype=float)
    if selection == "uniform":
        weights = (counts > 0).astype(float)
    elif selection == "activity":
        weights = np.where(counts > 0, counts ** exponent, 0.0)
    else:
        raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}.")
    total = weights.sum()
    if total <= 0:
        raise ConfigError("No device holds any training record this round: nothing to select.")
    return weights / total


def select_devices(counts: Sequence[int], k: int, rng: np.random.Generator, selection: str = "uniform",
                   exponent: float = 1.0) -> tuple[list[int], np.ndarray]:
    """``(selected device indices in draw order, p)``; fewer than K when fewer devices hold records."""
    p = selection_probabilities(counts, selection, exponent)
    k = min(int(k), int((p > 0).sum()))
    chosen = rng.choice(len(p), size=k, replace=False, p=p)
    return [int(i) for i in chosen], p


def inclusion_probabilities(p: Sequence[float], k: int) -> np.ndarray:
    """Exact π_i of successive sampling of k of len(p) items (enumerates ordered draws: small N only)."""
    p = np.asarray(p, dtype=float)
    pi = np.zeros(len(p))
    for seq in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in seq:
            if left <= 0:
                prob = 0.0
                break
            prob *= p[i] / left
            left -= p[i]
        for i in seq:
            pi[i] += prob
    return pi
