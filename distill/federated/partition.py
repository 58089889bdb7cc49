"""Split a training corpus over N virtual devices: IID, quantity skew, attribute skew (FedNLP-style).

Every partitioner is a pure function of ``(n_records | attributes, num_devices, alpha, seed)`` that returns one
index array per device; the devices' partitions are disjoint and together cover every record. Each device gets
at least ``min_size`` records.

* ``iid``: a seeded permutation cut into N near-equal parts.
* ``quantity`` (quantity skew): the share of device i is q_i with q ~ Dirichlet(α·1_N); records are IID across
  devices, only the amounts differ. Small α → a few devices hold most of the data.
* ``power_law`` (quantity skew): q_i ∝ (rank_i)^(−α) with a seeded random rank for each device (α = 0 is equal
  sizes, α = 1 Zipf-like).
* ``attribute`` (attribute skew, FedNLP's label-distribution skew): for every value c of a document attribute
  (``gender`` of the text, its ``occupation``), the records of value c are shared over the devices with
  proportions q_c ~ Dirichlet(α·1_N). Small α → each device sees mostly one or two values; α → ∞ is IID.
  Draws are repeated (up to 100 times, as FedNLP and Flower Datasets do) until every device has ``min_size``.

Why our own code: Flower Datasets (``flwr-datasets``) has equivalent partitioners, but its releases pin
``datasets<5``, which conflicts with this project's ``datasets`` 5.x; the maths is a few numpy draws.

Attributes are read from the text itself (:func:`text_attributes`), so any corpus can be split by them:
``gender`` is the unigram gender polarity of :mod:`distill.fairness.metrics` (male / female / neutral) and
``occupation`` is the first occupation of ``distill/resources/occupations.tsv`` named in the text (or ``none``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ..errors import ConfigError

PARTITIONS = ("iid", "quantity", "power_law", "attribute")
ATTRIBUTES = ("gender", "occupation")
MAX_DRAWS = 100


def _check(num_records: int, num_devices: int, min_size: int) -> None:
    if num_devices < 1:
        raise ConfigError(f"num_devices must be >= 1, got {num_devices}.")
    if min_size < 1:
        raise ConfigError(f"min_size must be >= 1, got {min_size}.")
    if num_records < num_devices * min_size:
        raise ConfigError(f"{num_records} training records cannot give {num_devices} devices {min_size} record(s) "
                          "each: use fewer devices or more data.")


def _split_by_shares(order: np.ndarray, shares: np.ndarray) -> list[np.ndarray]:
    """Cut ``order`` into consecutive pieces whose sizes follow ``shares`` (largest-remainder rounding)."""
    n = len(order)
    raw = shares / shares.sum() * n
    sizes = np.floor(raw).astype(int)
    rest = n - sizes.sum()
    sizes[np.argsort(-(raw - sizes), kind="stable")[:rest]] += 1
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]


def _sizes_with_minimum(n: int, shares: np.ndarray, min_size: int) -> np.ndarray:
    """Integer sizes summing to n: ``min_size`` each, the rest in proportion to ``shares``."""
    rest = n - min_size * len(shares)
    raw = shares / shares.sum() * rest
    sizes = np.floor(raw).astype(int)
    sizes[np.argsort(-(raw - sizes), kind="stable")[: rest - sizes.sum()]] += 1
    return sizes + min_size


def iid_partition(num_records: int, num_devices: int, seed: int = 0, min_size: int = 1) -> list[np.ndarray]:
    _check(num_records, num_devices, min_size)
    order = np.random.default_rng(seed).permutation(num_records)
    return [np.sort(p) for p in np.array_split(order, num_devices)]


def quantity_partition(num_records: int, num_devices: int, alpha: float, seed: int = 0, min_size: int = 1,
                       power_law: bool = False) -> list[np.ndarray]:
    """Quantity skew: Dirichlet(α) shares, or power-law shares ∝ rank^(−α) with ``power_law=True``."""
    _check(num_records, num_devices, min_size)
    if not alpha > 0 and not (power_law and alpha == 0):
        raise ConfigError(f"partition_alpha must be > 0 for quantity skew, got {alpha}.")
    rng = np.random.default_rng(seed)
    if power_law:
        shares = (rng.permutation(num_devices) + 1.0) ** (-alpha)
    else:
        shares = rng.dirichlet(np.full(num_devices, alpha))
    sizes = _sizes_with_minimum(num_records, shares, min_size)
    order = rng.permutation(num_records)
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]


def attribute_partition(attributes: Sequence[str], num_devices: int, alpha: float, seed: int = 0,
                        min_size: int = 1) -> list[np.ndarray]:
    """Attribute skew: the records of each attribute value go to devices with Dirichlet(α) proportions."""
    _check(len(attributes), num_devices, min_size)
    if not alpha > 0:
        raise ConfigError(f"partition_alpha must be > 0 for attribute skew, got {alpha}.")
    rng = np.random.default_rng(seed)
    values = np.asarray(attributes)
    groups = [np.flatnonzero(values == v) for v in sorted(set(values.tolist()))]
    for _ in range(MAX_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
        for idx in groups:
            shares = rng.dirichlet(np.full(num_devices, alpha))
            for device, piece in enumerate(_split_by_shares(rng.permutation(idx), shares)):
                parts[device].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ConfigError(f"Attribute skew with partition_alpha={alpha} left a device with fewer than {min_size} "
                      f"record(s) in {MAX_DRAWS} draws: raise partition_alpha or use fewer devices.")


@lru_cache(maxsize=1)
def _occupation_pattern() -> tuple[re.Pattern, dict[str, str]]:
    from ..occupations import load_occupations

    names = sorted((o.name for o in load_occupations()), key=len, reverse=True)  # "truck driver" before "driver"
    return re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.IGNORECASE), \
        {n.lower(): n for n in names}


def text_attributes(texts: Sequence[str], attribute: str) -> list[str]:
    """The value of ``attribute`` (``gender`` or ``occupation``) of each text."""
    if attribute == "gender":
        from ..fairness.metrics import gender_polarity

        return [gender_polarity(t) for t in texts]
    if attribute == "occupation":
        pattern, canonical = _occupation_pattern()
        out = []
        for t in texts:
            m = pattern.search(t)
            out.append(canonical[m.group(1).lower()] if m else "none")
        return out
    raise ConfigError(f"partition_attribute must be one of {', '.join(ATTRIBUTES)}; got {attribute!r}.")


def partition(texts: Sequence[str], num_devices: int, scheme: str = "iid", alpha: float = 0.5,
              attribute: str = "gender", seed: int = 0, min_size: int = 1) -> list[np.ndarray]:
    """Record indices of each device under ``scheme`` (one of :data:`PARTITIONS`)."""
    if scheme == "iid":
        return iid_partition(len(texts), num_devices, seed, min_size)
    if scheme in ("quantity", "power_law"):
        return quantity_partition(len(texts), num_devices, alpha, seed, min_size, power_law=scheme == "power_law")
    if scheme == "attribute":
        return attribute_partition(text_attributes(texts, attribute), num_devices, alpha, seed, min_size)
    raise ConfigError(f"partition must be one of {', '.join(PARTITIONS)}; got {scheme!r}.")


def attribute_skew(parts: Sequence[np.ndarray], attributes: Sequence[str]) -> float:
    """Mean over devices (weighted by size) of the total variation distance between the device's attribute
    distribution and the whole corpus's: 0 for identical mixtures, up to 1 for disjoint ones."""
    values = np.asarray(attributes)
    cats = sorted(set(values.tolist()))
    overall = np.array([(values == c).mean() for c in cats])
    total, dist = 0, 0.0
    for p in parts:
        if len(p) == 0:
            continue
        local = np.array([(values[p] == c).mean() for c in cats])
        dist += len(p) * 0.5 * np.abs(local - overall).sum()
        total += len(p)
    return float(dist / max(total, 1))
