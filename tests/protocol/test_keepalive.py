"""The dead-peer clock, on a fake clock: when it pings, when it gives up, and that life resets it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comtunnel.protocol.keepalive import Action, KeepAlive


def run_until(ka: KeepAlive, end: float, heard: set[float] = frozenset()) -> list[tuple[float, Action]]:
    """Fire the timer exactly at each deadline, as the driver does; note what it says."""
    out = []
    now = 0.0
    while True:
        for t in sorted(heard):  # what arrives before the (moving) deadline, in time order
            if ka.last_heard < t <= ka.deadline():
                ka.received(t)
        now = ka.deadline()
        if now > end:
            return out
        action = ka.on_timer(now)
        if action is not Action.NONE:
            out.append((now, action))
        if action is Action.DEAD:
            return out


def test_silent_peer_is_pinged_then_declared_dead_at_the_timeout() -> None:
    ka = KeepAlive(0.0, interval=5.0, timeout=15.0)
    assert run_until(ka, 100.0) == [(5.0, Action.PING), (10.0, Action.PING), (15.0, Action.DEAD)]


def test_any_input_resets_the_clock() -> None:
    ka = KeepAlive(0.0, interval=5.0, timeout=15.0)
    assert ka.on_timer(4.9) is Action.NONE
    ka.received(4.0)
    assert ka.deadline() == 9.0
    assert ka.on_timer(9.0) is Action.PING
    ka.received(9.2)  # the pong
    assert ka.deadline() == pytest.approx(14.2)
    assert ka.on_timer(14.2) is Action.PING
    assert ka.on_timer(29.2) is Action.DEAD


def test_early_timer_calls_do_nothing() -> None:
    ka = KeepAlive(10.0, interval=1.0, timeout=3.0)
    assert ka.on_timer(10.5) is Action.NONE
    assert ka.deadline() == 11.0


def test_interval_must_be_shorter_than_timeout() -> None:
    with pytest.raises(ValueError):
        KeepAlive(0.0, interval=15.0, timeout=15.0)


@given(st.lists(st.floats(0.0, 60.0), max_size=20), st.floats(0.5, 5.0), st.floats(1.1, 4.0))
def test_dead_exactly_when_silent_for_timeout(heard: list[float], interval: float, factor: float) -> None:
    """Never declared dead before ``timeout`` of silence, and always by then (the driver firing on time)."""
    timeout = interval * factor
    ka = KeepAlive(0.0, interval=interval, timeout=timeout)
    events = run_until(ka, 200.0, set(heard))
    assert events and events[-1][1] is Action.DEAD
    when = events[-1][0]
    last = max([0.0, *[t for t in heard if t <= when]])
    assert when == pytest.approx(last + timeout)
    pings = [t for t, a in events if a is Action.PING]
    assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(pings))
