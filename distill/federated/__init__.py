"""Federated distillation on Flower: devices keep their records and send back only student weights.

* :mod:`.partition` — split a corpus over N devices (iid, quantity skew, attribute skew), from a seed;
* :mod:`.selection` — pick K of N devices a round (uniform, or by activity: P ∝ records^γ);
* :mod:`.storage` — what a device holds at a round (static; continual with a storage cap, oldest deleted);
* :mod:`.strategy` — the Flower strategy (FedAvg weighted by records + selection; central DP wrapper);
* :mod:`.app` — the Flower ClientApp / ServerApp factories (the local step is injected by the caller);
* :mod:`.local_training` — the devices' local step (:class:`~distill.DistillationTrainer` on the device's
  records) and the per-process teacher + initial student (:func:`distill.distillation.models.build_models`);
* :mod:`.evaluation`, :mod:`.report`, :mod:`.simulation` — server-side evaluation, outputs, the simulation run;
* :mod:`.deployment` — the ServerApp / ClientApp of a real deployment (``flwr run``).

``distill federated`` (:mod:`distill.commands.federated`) reads the configs and calls these.
"""

from .config import FederatedConfig
from .partition import partition
from .selection import select_devices, selection_probabilities
from .storage import held_window

__all__ = ["FederatedConfig", "partition", "select_devices", "selection_probabilities", "held_window"]
