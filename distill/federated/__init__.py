"""Federated distillation on Flower: devices keep their records and send back only student weights.

* :mod:`.partition` — split a corpus over N devices (iid, quantity skew, attribute skew), from a seed;
* :mod:`.selection` — pick K of N devices a round (uniform, or by activity: P ∝ records^γ);
* :mod:`.storage` — what a device holds at a round (static; continual with a storage cap, oldest deleted);
* :mod:`.strategy` — the Flower strategy (FedAvg weighted by records + selection; central DP wrapper);
* :mod:`.app` — the Flower ClientApp / ServerApp factories (the local step is injected by the caller);
* :mod:`.evaluation`, :mod:`.report`, :mod:`.simulation` — server-side evaluation, outputs, the simulation run.

This package never imports the trainer: ``distill federated`` (:mod:`distill.commands.federated`) provides the
local-training callable that runs :class:`~distill.DistillationTrainer`.
"""

from .config import FederatedConfig
from .partition import partition
from .selection import select_devices, selection_probabilities
from .storage import held_window

__all__ = ["FederatedConfig", "partition", "select_devices", "selection_probabilities", "held_window"]
