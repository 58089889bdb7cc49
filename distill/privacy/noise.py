"""The Gaussian mechanism on a logical batch: one noise draw for the global sum, however many processes.

Each process holds the sum of the clipped per-record gradients of its share of the logical batch. Rank 0
adds ``N(0, σ²C²)`` to its share, then the shares are summed across processes (``all_reduce``), so the global
sum gets exactly one noise draw; every process ends with the same gradient, divided by the expected
logical batch size (in records). Without ``torch.distributed`` it is the single-process mechanism.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from opacus.optimizers.optimizer import _generate_noise


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def privatize(params: list[torch.nn.Parameter], summed: dict[int, torch.Tensor], *, noise_std: float,
              expected_batch_size: float, generator: torch.Generator | None = None,
              secure_mode: bool = False) -> None:
    """Set ``p.grad = (Σ_processes clipped sum + one N(0, noise_std²) draw) / expected_batch_size``.

    ``summed`` maps ``id(p)`` to the process's clipped sum (missing: no record of this process touched it).
    """
    rank, world = _world()
    sums = []
    for p in params:
        s = summed.get(id(p))
        sums.append(torch.zeros_like(p, dtype=torch.float32) if s is None else s.float())
    if rank == 0 and noise_std > 0:
        for s in sums:
            s.add_(_generate_noise(std=noise_std, reference=s, generator=generator, secure_mode=secure_mode))
    if world > 1:
        flat = torch.cat([s.reshape(-1) for s in sums])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        sums = list(torch.split(flat, [s.numel() for s in sums]))
    for p, s in zip(params, sums):
        p.grad = (s.reshape(p.shape) / expected_batch_size).to(p.dtype)
    summed.clear()
