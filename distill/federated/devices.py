"""The virtual devices of a simulation: who holds which records at which round.

:class:`DeviceData` splits the training texts with a partitioner (:mod:`.partition`) and gives each device its
stream: its records in a seeded order. :meth:`DeviceData.records` returns what device ``d`` holds at round
``r`` under the static/continual setting (:mod:`.storage`). Every process that builds a ``DeviceData`` from
the same texts and config gets the same partitions, so Flower's simulation workers need no shared state.
In a real deployment each SuperNode reads its own records instead (``data-file`` in its node config).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import FederatedConfig
from .partition import attribute_skew, partition, text_attributes
from .storage import held_count, held_window


class DeviceData:
    def __init__(self, texts: Sequence[str], fl: FederatedConfig, seed: int):
        self.texts = list(texts)
        self.fl = fl
        self.parts = partition(self.texts, fl.num_devices, fl.partition, fl.partition_alpha,
                               fl.partition_attribute, seed=seed, min_size=fl.min_records)
        rng = np.random.default_rng(seed + 1)
        self.streams = [rng.permutation(p) for p in self.parts]  # arrival order of each device's records

    def __len__(self) -> int:
        return len(self.streams)

    def window(self, device: int, server_round: int) -> tuple[int, int]:
        return held_window(len(self.streams[device]), server_round, self.fl.num_rounds, self.fl.setting,
                           self.fl.storage)

    def records(self, device: int, server_round: int) -> list[str]:
        start, end = self.window(device, server_round)
        return [self.texts[i] for i in self.streams[device][start:end]]

    def counts(self, server_round: int) -> list[int]:
        return [held_count(len(s), server_round, self.fl.num_rounds, self.fl.setting, self.fl.storage)
                for s in self.streams]

    def summary(self) -> dict:
        """Partition sizes and how skewed they are (for the report)."""
        sizes = [len(p) for p in self.parts]
        attrs = text_attributes(self.texts, self.fl.partition_attribute)
        return {"sizes": sizes, "total_records": len(self.texts),
                "size_cv": float(np.std(sizes) / max(np.mean(sizes), 1e-12)),
                "attribute": self.fl.partition_attribute,
                "attribute_skew_tv": attribute_skew(self.parts, attrs)}


def read_device_file(path: str) -> list[str]:
    """A deployed device's own records: one text a line (.txt) or a ``text`` field a line (.jsonl)."""
    import json

    with open(path, encoding="utf-8") as fh:
        if path.endswith(".jsonl"):
            return [json.loads(line)["text"] for line in fh if line.strip()]
        return [line.rstrip("\n") for line in fh if line.strip()]
