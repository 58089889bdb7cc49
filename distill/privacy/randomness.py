"""Secret randomness for DP-SGD: the Gaussian noise and the Poisson sample must not be derivable from public values.

DP-SGD's guarantee assumes the adversary does not know the noise added to each step nor which records each step
sampled. The training ``seed`` is published (config, model card), so neither may come from it. By default:

* **noise** — a :class:`torch.Generator` (on the parameters' device) seeded with 64 bits from the operating
  system's entropy pool (:func:`secrets.randbits`, i.e. ``os.urandom``). Only process 0 draws noise (one draw per
  logical step for the global sum, :mod:`distill.privacy.noise`), so only process 0 needs this generator.
* **sample** — the Poisson sample of each step must be the *same* on every process (each process takes its share
  of one logical batch). Process 0 draws a 64-bit secret seed from OS entropy once, when the sampler is built,
  and broadcasts it to the other processes (:func:`shared_secret_seed`); the per-epoch sampling generators are
  derived from it.
* ``seed`` keeps governing everything that does not need to be secret: initialisation, dropout, CDA coin flips.

``dp_reproducible: true`` derives both from ``seed`` instead (tests, debugging): the run is then **not**
private against anyone who knows the seed, and ``privacy.json`` and the model card say so.

Limits (why not a CSPRNG): torch has no cryptographically secure generator (``torchcsprng``, which opacus'
``secure_mode`` relies on, is unmaintained and has no build for current torch). The CPU generator is a Mersenne
Twister and the CUDA one Philox: neither is a CSPRNG, and their state could in principle be reconstructed from
enough *observed* outputs. Here no output is observed directly: the noise is only ever released summed into
gradients, after the optimizer, and the seed has 64 bits of OS entropy, so the attack that the issue guards
against — regenerating the noise from a published seed — is closed. The noise itself is drawn as
``(Σ_{i=1..4} N(0, σ²))/2`` (Holohan & Braghin 2021, as opacus' ``secure_mode``), which protects against the
floating-point attack on Gaussian samplers (Jin et al. 2022).
"""

from __future__ import annotations

import hashlib
import secrets

import torch
import torch.distributed as dist

_MASK64 = (1 << 64) - 1


def os_entropy_seed() -> int:
    """64 bits from the operating system's entropy pool (``os.urandom``)."""
    return secrets.randbits(64)


def derived_seed(seed: int, purpose: str) -> int:
    """A 64-bit seed for ``purpose`` derived from a public ``seed`` (reproducible mode only)."""
    digest = hashlib.sha256(f"fair-distill/{purpose}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def mix(seed: int, counter: int) -> int:
    """A 64-bit seed for the ``counter``-th stream of ``seed`` (e.g. one per epoch)."""
    digest = hashlib.sha256(f"{int(seed) & _MASK64}/{int(counter)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _broadcast_int(value: int) -> int:
    """Process 0's ``value`` on every process (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    # int64 holds the 64-bit seed as a signed value
    t = torch.tensor([value - (1 << 64) if value >= (1 << 63) else value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item()) & _MASK64


def shared_secret_seed() -> int:
    """A secret seed drawn on process 0 from OS entropy and broadcast to all processes (a collective call)."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return _broadcast_int(os_entropy_seed() if rank == 0 else 0)


class DPRandomness:
    """The noise generator and the sampling seed of one DP run (secret unless ``reproducible``)."""

    def __init__(self, reproducible: bool = False, seed: int = 0):
        self.reproducible = bool(reproducible)
        self.seed = int(seed)
        self._sampling_seed: int | None = None
        self._noise: torch.Generator | None = None

    @property
    def source(self) -> str:
        return "seed (dp_reproducible: NOT secret)" if self.reproducible else "operating-system entropy (secret)"

    def sampling_seed(self) -> int:
        """The seed of the record sampler, identical on every process. Collective the first time (all processes)."""
        if self._sampling_seed is None:
            self._sampling_seed = derived_seed(self.seed, "sampling") if self.reproducible else shared_secret_seed()
        return self._sampling_seed

    def noise_generator(self, device: torch.device | str) -> torch.Generator:
        """The generator of the DP noise on ``device`` (created on first use)."""
        device = torch.device(device)
        if self._noise is None or self._noise.device.type != device.type:
            seed = derived_seed(self.seed, "noise") if self.reproducible else os_entropy_seed()
            self._noise = torch.Generator(device=device).manual_seed(seed)
        return self._noise

    def describe(self) -> dict:
        """What privacy.json and the model card say about the randomness."""
        out = {"source": self.source, "reproducible": self.reproducible}
        if self.reproducible:
            out["warning"] = ("dp_reproducible was on: the DP noise and the record sample were derived from the "
                              "public training seed. Anyone who knows the seed can regenerate them, so the stated "
                              "(epsilon, delta) does NOT hold. Use this model for tests and debugging only.")
        return out
