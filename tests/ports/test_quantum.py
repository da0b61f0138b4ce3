"""ReadQuantum: a busy port reads the small quantum exactly while another port has had data recently."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from comtunnel.ports.quantum import ALONE, RECENT, SHARED, ReadQuantum


def test_a_port_alone_reads_the_large_quantum() -> None:
    quantum = ReadQuantum()
    flood = object()
    for step in range(100):
        assert quantum.size(flood, step * 0.001) == ALONE
        quantum.read(flood, step * 0.001)


def test_a_quiet_port_makes_the_busy_one_share_until_it_has_been_quiet_for_a_while() -> None:
    quantum = ReadQuantum()
    flood, quiet = object(), object()
    quantum.read(flood, 0.0)
    assert quantum.size(quiet, 0.001) == SHARED  # the flood read just now
    quantum.read(quiet, 0.001)
    quantum.read(flood, 0.002)
    assert quantum.size(flood, 0.003) == SHARED
    quantum.read(flood, 0.010)
    assert quantum.size(flood, 0.001 + RECENT * 0.99) == SHARED
    assert quantum.size(flood, 0.001 + RECENT * 1.01) == ALONE


def test_the_first_read_of_a_process_is_alone() -> None:
    assert ReadQuantum().size(object(), 0.0) == ALONE


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 3 * RECENT)), max_size=60), st.integers(0, 3))
def test_matches_the_definition_for_any_sequence_of_reads(reads: list[tuple[int, float]], asking: int) -> None:
    """SHARED iff some port other than the one asking read within RECENT (every read remembered)."""
    ports = [object() for _ in range(4)]
    quantum = ReadQuantum()
    now = 0.0
    history: list[tuple[int, float]] = []
    for port, gap in reads:
        now += gap
        quantum.read(ports[port], now)
        history.append((port, now))
    now += RECENT / 2
    others = [at for port, at in history if port != asking]
    expected = SHARED if others and now - max(others) < RECENT else ALONE
    assert quantum.size(ports[asking], now) == expected
