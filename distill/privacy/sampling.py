"""Poisson sampling of records into logical batches, split into micro-batches for accumulation/processes.

Every logical step draws each *record* independently with probability ``q`` (opacus'
:class:`~opacus.utils.uniform_sampler.UniformWithReplacementSampler`, seeded identically on every process, so
all processes see the same draw). The seed is the run's *secret* sampling seed
(:meth:`distill.privacy.randomness.DPRandomness.sampling_seed`: OS entropy drawn on process 0 and broadcast),
not the public training seed; each epoch's generator is derived from it. The drawn records are split into
``gradient_accumulation_steps × num_processes`` micro-batches of nearly equal size; a process gets micro-batches ``j·W + rank``. All rows of a
record stay in one micro-batch (their gradients are clipped together). A micro-batch may be empty; the
collator then yields an empty batch, which the engine skips.

With ``dp_poisson_sampling: false`` logical batches are fixed-size slices of a per-epoch shuffle of the
records. No amplification by sampling is claimed for them: the accountant counts every step as if it saw every
record (``q = 1``, :func:`distill.privacy.accounting.accounted_sample_rate`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader, Sampler

from ..outputs import RECORD_ID
from .randomness import mix


class RecordBatchSampler(Sampler[list[int]]):
    """Yields, for one process, the row indices of each micro-batch of each logical step."""

    def __init__(self, records: list[list[int]], *, sample_rate: float, steps_per_epoch: int,
                 micro_batches: int, num_processes: int = 1, process_index: int = 0, seed: int = 0,
                 poisson: bool = True, batch_records: int | None = None):
        self.records = records
        self.sample_rate = sample_rate
        self.steps_per_epoch = steps_per_epoch
        self.micro_batches = micro_batches
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.poisson = poisson
        self.batch_records = batch_records or max(1, round(sample_rate * len(records)))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.micro_batches

    def logical_batches(self):
        """The record indices of each logical step of the current epoch (the same on every process)."""
        gen = torch.Generator().manual_seed(mix(self.seed, self.epoch))
        if self.poisson:
            sampler = UniformWithReplacementSampler(num_samples=len(self.records), sample_rate=self.sample_rate,
                                                    generator=gen, steps=self.steps_per_epoch)
            yield from sampler
        else:
            perm = torch.randperm(len(self.records), generator=gen).tolist()
            for s in range(self.steps_per_epoch):
                yield perm[s * self.batch_records:(s + 1) * self.batch_records]

    def __iter__(self):
        parts = self.micro_batches * self.num_processes
        for selected in self.logical_batches():
            chunks = np.array_split(np.asarray(selected, dtype=np.int64), parts)
            for j in range(self.micro_batches):
                chunk = chunks[j * self.num_processes + self.process_index]
                yield [row for rec in chunk.tolist() for row in self.records[rec]]


class RecordDataLoader(DataLoader):
    """A DataLoader over a :class:`RecordBatchSampler` that forwards ``set_epoch`` (the Trainer calls it)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class EmptyBatchCollator:
    """Wraps a collator: an empty micro-batch becomes a batch with zero rows instead of an error."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if examples:
            return self.collator(examples)
        empty = torch.zeros((0, 1), dtype=torch.long)
        return {"input_ids": empty, "attention_mask": empty.clone(), "labels": empty.clone(),
                "position_ids": empty.clone(), RECORD_ID: torch.zeros(0, dtype=torch.long)}
