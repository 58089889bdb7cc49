"""The process and its machine (:mod:`distill.runtime`): the memory the memory-for-speed choices read."""

from distill import runtime


def test_available_memory_is_shared_among_the_machines_processes(monkeypatch):
    """Every process of ``accelerate launch`` reads MemAvailable at once: each may count on its share only."""
    monkeypatch.setattr(runtime, "_mem_available", lambda: 24 * 2**30)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.available_memory() == 24 * 2**30
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runtime.available_memory() == 6 * 2**30
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "not a number")
    assert runtime.available_memory() == 24 * 2**30
    monkeypatch.setattr(runtime, "_mem_available", lambda: None)
    assert runtime.available_memory() is None
