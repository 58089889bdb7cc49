"""Fairness evaluation split across processes: a deterministic share of the prompts each, gathered back.

Under ``accelerate launch`` (or inside a multi-process training run) prompt ``i`` goes to process
``i mod W``; each process scores or generates for its share, and ``torch.distributed.all_gather_object``
puts the per-prompt results back in prompt order on every process (the main process alone writes files and
logs). Which process handles a prompt does not change its result: scoring is per prompt, greedy decoding is
deterministic, and sampling draws each prompt's continuations from that prompt's own seed
(:func:`distill.fairness.generation.generate_continuations` with ``prompt_ids``). A single process
(no ``torch.distributed`` group) evaluates everything. Own code: ``accelerate``'s ``split_between_processes``
splits contiguously and pads uneven shares, which would need un-padding here; this is the one-line strided
split and one object gather.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def process_state():
    """accelerate's ``PartialState`` of this process: under ``accelerate launch`` it joins the process group
    (gloo on a machine without an accelerator, which accelerate only does when told ``cpu=True``)."""
    from accelerate import PartialState

    accel = getattr(torch, "accelerator", None)
    has_accelerator = accel.is_available() if accel is not None else torch.cuda.is_available()
    return PartialState(cpu=not has_accelerator)


def process_split(enabled: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` to split evaluation over: torch.distributed's group if there is one (it is set up
    from ``accelerate launch``'s environment when needed), else ``(0, 1)``."""
    if not enabled:
        return 0, 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        process_state()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The prompts of process ``rank`` of ``world``: ``i`` with ``i mod world == rank`` (balanced, deterministic)."""
    return list(range(rank, n, world))


def map_sharded(items: Sequence[T], fn: Callable[[list[T], list[int]], list[Any]], rank: int = 0,
                world: int = 1) -> list[Any]:
    """``fn(items[share], share)`` on this process's share, gathered into one list in the order of ``items``
    on every process. ``fn`` gets the items and their global indices and returns one result per item.
    Every process must call it (one collective), even with an empty share."""
    idx = shard_indices(len(items), rank, world)
    mine = fn([items[i] for i in idx], idx) if idx else []
    if len(mine) != len(idx):
        raise RuntimeError(f"map_sharded: {len(mine)} results for {len(idx)} items.")
    if world == 1:
        return list(mine)
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, list(zip(idx, mine)))
    out: list[Any] = [None] * len(items)
    for part in parts:
        for i, value in part:
            out[i] = value
    return out
