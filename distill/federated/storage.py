"""Which of its records a device holds at a round: the ``static`` and ``continual`` settings.

A device's partition is its stream of records, in a fixed (seeded) order.

* ``static``: every record is on the device from the start: it holds records [0, L) at every round.
* ``continual``: the device produces its records over the run, at its own rate: by round r (1 ≤ r ≤ R) it has
  received a(r) = ⌈L · r / R⌉ records (so an active device, with a large L, produces more records per round),
  and it keeps at most ``storage`` of them, deleting the oldest first: it holds [max(0, a(r) − storage), a(r)).

Pure functions of (L, r, R, storage): the server and every device compute the same window, nothing is stored
between rounds, and a restarted device holds what it would have held.
"""

from __future__ import annotations

import math

from ..errors import ConfigError

SETTINGS = ("static", "continual")


def received(stream_len: int, server_round: int, num_rounds: int) -> int:
    """a(r): records a continual device has produced by round ``server_round``."""
    r = min(max(server_round, 0), num_rounds)
    return min(stream_len, math.ceil(stream_len * r / num_rounds))


def held_window(stream_len: int, server_round: int, num_rounds: int, setting: str = "static",
                storage: int | None = None) -> tuple[int, int]:
    """``(start, end)``: the device holds records ``stream[start:end]`` at ``server_round``."""
    if setting == "static":
        return 0, stream_len
    if setting != "continual":
        raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}; got {setting!r}.")
    if storage is not None and storage < 1:
        raise ConfigError(f"storage must be >= 1 record, got {storage}.")
    end = received(stream_len, server_round, num_rounds)
    start = 0 if storage is None else max(0, end - storage)
    return start, end


def held_count(stream_len: int, server_round: int, num_rounds: int, setting: str = "static",
               storage: int | None = None) -> int:
    start, end = held_window(stream_len, server_round, num_rounds, setting, storage)
    return end - start
