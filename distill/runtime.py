"""Process-level runtime tuning applied by the `distill` command line.

On Linux/glibc, PyTorch's CPU tensors of a causal LM's logits (tokens x 50257 floats) are large enough that
glibc serves each one with a fresh ``mmap`` and returns it with ``munmap``: every softmax, KL and backward
op then pays page faults on tens of MB. Raising glibc's mmap and trim thresholds keeps those buffers in
the heap for reuse; measured on a tiny GPT-2 distillation step on 2 CPU cores this cuts step time 2-2.5x.
Set ``FAIR_DISTILL_NO_MALLOPT=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_cpu_allocator() -> bool:
    """Keep large CPU buffers in glibc's heap (once per process). Returns whether it was applied."""
    global _done
    if _done or not sys.platform.startswith("linux") or os.environ.get("FAIR_DISTILL_NO_MALLOPT"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        ok = False
    _done = ok
    return ok
