"""Admission: the handshake budget with early drop, per-source limits, and the sessions' own budget."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comtunnel.policy.admission import Admission, AdmissionLimits, BufferBudget


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_one_source_cannot_take_every_handshake_slot() -> None:
    admission = Admission(AdmissionLimits(begin=32, full=128, per_source=4))
    assert [admission.arrive("10.0.0.1") for _ in range(4)] == [None] * 4
    refused = admission.arrive("10.0.0.1")
    assert refused == "10.0.0.1 already has 4 connections in their handshake"
    assert admission.arrive("10.0.0.2") is None  # everyone else still gets in
    admission.left("10.0.0.1", authenticated=False)
    assert admission.arrive("10.0.0.1") is None


def test_early_drop_grows_from_rate_to_certain_at_full() -> None:
    limits = AdmissionLimits(begin=10, rate=0.3, full=20, per_source=100)
    for value, admitted in ((0.29, False), (0.31, True)):  # at begin: dropped with probability 0.3
        admission = Admission(limits, FixedRandom(value))
        assert all(admission.arrive("a") is None for _ in range(10))  # below begin: always taken
        assert (admission.arrive("a") is None) is admitted
    halfway = Admission(limits, FixedRandom(0.64))  # at 15 of 10..20: 0.3 + 0.7 * 0.5 = 0.65
    for _ in range(15):
        halfway.startups["a"] += 1
    assert halfway.arrive("a") is not None
    full = Admission(limits, FixedRandom(0.999))
    full.startups["a"] = 20
    assert full.arrive("b") == "20 connections in their handshake, the limit"
    assert full.refused["startup"] == 1


def test_sessions_have_their_own_budget() -> None:
    admission = Admission(AdmissionLimits(begin=2, full=2, per_source=2, sessions=1))
    assert admission.arrive("a") is None and admission.arrive("b") is None
    assert admission.arrive("c") is not None  # handshakes are full...
    assert admission.authenticated("a") is None  # ...which never stops a session, and frees a slot
    assert admission.arrive("c") is None
    assert admission.authenticated("b") == "1 sessions connected, the limit"
    admission.left("", authenticated=True)
    assert admission.sessions == 0 and admission.authenticated("c") is None


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["arrive", "auth", "leave"])), max_size=200))
def test_counts_never_go_negative_or_over_the_limits(steps: list[tuple[str, str]]) -> None:
    limits = AdmissionLimits(begin=3, full=6, per_source=2, sessions=3)
    admission = Admission(limits, random.Random(7))
    startups: list[str] = []
    sessions = 0
    for source, step in steps:
        if step == "arrive" and admission.arrive(source) is None:
            startups.append(source)
        elif step == "auth" and source in startups:
            startups.remove(source)
            if admission.authenticated(source) is None:
                sessions += 1
        elif step == "leave":
            if source in startups:
                startups.remove(source)
                admission.left(source, authenticated=False)
            elif sessions:
                sessions -= 1
                admission.left("", authenticated=True)
        assert admission.startup_count == len(startups) <= limits.full
        assert all(admission.startups[s] == startups.count(s) <= limits.per_source for s in "abcd")
        assert admission.sessions == sessions <= limits.sessions


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="begin"):
        AdmissionLimits(begin=10, full=5)
    with pytest.raises(ValueError, match="positive"):
        AdmissionLimits(per_source=0)


def test_the_buffer_budget_refuses_growth_past_its_limit_and_takes_back_what_shrinks() -> None:
    budget = BufferBudget(100)
    assert budget.change(0, 60) and budget.held == 60
    assert not budget.change(0, 41) and budget.held == 60  # refused: nothing charged
    assert budget.change(0, 40) and budget.held == 100
    assert budget.change(60, 10) and budget.held == 50  # a frame completed: most given back
    assert budget.change(10, 0) and budget.change(40, 0) and budget.held == 0
