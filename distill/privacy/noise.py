"""The Gaussian mechanism on a logical batch: one noise draw for the global sum, however many processes.

Each process holds the sum of the clipped per-record gradients of its share of the logical batch. Rank 0
adds ``N(0, σ²C²)`` to its share, then the shares are summed across processes (``all_reduce``), so the global
sum gets exactly one noise draw; every process ends with the same gradient, divided by the expected
logical batch size (in records). Without ``torch.distributed`` it is the single-process mechanism.

The draw uses the run's secret generator (:mod:`distill.privacy.randomness`) and is the sum of four
``N(0, σ²)`` samples halved, which is again ``N(0, σ²)`` but resists the floating-point attack on a single
Gaussian sample (Holohan & Braghin 2021; the same construction as opacus' ``secure_mode``). Written here rather
than imported because opacus exposes it only as a private function.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gaussian_noise(std: float, reference: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``N(0, std²)`` of ``reference``'s shape as ``(Σ_{i=1..4} N(0, std²)) / 2`` (float-attack resistant)."""
    if std == 0:
        return torch.zeros_like(reference)
    total = torch.zeros(reference.shape, device=reference.device, dtype=torch.float32)
    for _ in range(4):
        total += torch.normal(0.0, std, size=reference.shape, device=reference.device, generator=generator)
    return (total / 2).to(reference.dtype)


def privatize(params: list[torch.nn.Parameter], summed: dict[int, torch.Tensor], *, noise_std: float,
              expected_batch_size: float, generator: torch.Generator | None = None) -> None:
    """Set ``p.grad = (Σ_processes clipped sum + one N(0, noise_std²) draw) / expected_batch_size``.

    ``summed`` maps ``id(p)`` to the process's clipped sum (missing: no record of this process touched it).
    ``generator``: the secret noise generator (only process 0 uses it); ``None`` falls back to torch's global one.
    """
    rank, world = _world()
    sums = []
    for p in params:
        s = summed.get(id(p))
        sums.append(torch.zeros_like(p, dtype=torch.float32) if s is None else s.float())
    if rank == 0 and noise_std > 0:
        for s in sums:
            s.add_(gaussian_noise(noise_std, s, generator))
    if world > 1:
        flat = torch.cat([s.reshape(-1) for s in sums])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        sums = list(torch.split(flat, [s.numel() for s in sums]))
    for p, s in zip(params, sums):
        p.grad = (s.reshape(p.shape) / expected_batch_size).to(p.dtype)
    summed.clear()
