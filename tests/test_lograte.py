"""Repeated warnings are limited per kind and source, and what was left out is counted."""

from __future__ import annotations

from comtunnel.lograte import LogLimiter


def test_a_burst_then_silence_then_the_count() -> None:
    limiter = LogLimiter(burst=3, window=10.0)
    key = ("bad input", "10.0.0.1")
    assert [limiter.allow(key, t) for t in (0, 1, 2)] == [(True, 0)] * 3
    assert [limiter.allow(key, 3 + t / 100) for t in range(500)] == [(False, 0)] * 500
    assert limiter.allow(("bad input", "10.0.0.2"), 5) == (True, 0)  # another source is not affected
    assert limiter.allow(("other kind", "10.0.0.1"), 5) == (True, 0)  # nor another kind
    assert limiter.allow(key, 10.0) == (True, 500)  # the next window's first line carries the count


def test_due_reports_each_ended_window_once() -> None:
    limiter = LogLimiter(burst=1, window=10.0)
    for t in range(5):
        limiter.allow(("k", "a"), t)
    limiter.allow(("k", "b"), 0)
    assert limiter.due(9.9) == []
    assert limiter.due(10.0) == [(("k", "a"), 4)]  # b had nothing left out
    assert limiter.due(20.0) == []
    assert limiter.allow(("k", "a"), 21) == (True, 0)


def test_many_sources_cannot_grow_the_table_without_bound() -> None:
    limiter = LogLimiter(burst=1, window=10.0, max_keys=100)
    for n in range(10_000):
        limiter.allow(("k", f"10.0.{n // 256}.{n % 256}"), n / 1000)
    assert len(limiter._state) <= 100
