from __future__ import annotations

from comtunnel.policy.backoff import Backoff
from comtunnel.policy.deadlines import Deadlines, Timeout


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_the_earliest_deadline_is_next_and_each_expires_once() -> None:
    deadlines = Deadlines()
    assert deadlines.next() is None and deadlines.expired(1e9) == []
    deadlines.set(Timeout.GRACE, 30.0)
    deadlines.set(Timeout.HELLO, 10.0)
    assert deadlines.next() == 10.0
    assert deadlines.expired(9.99) == []
    assert deadlines.expired(10.0) == [Timeout.HELLO]
    assert deadlines.next() == 30.0 and deadlines.pending(Timeout.GRACE)
    assert deadlines.expired(100.0) == [Timeout.GRACE]
    assert deadlines.expired(100.0) == [] and deadlines.next() is None


def test_a_cleared_deadline_never_fires_and_setting_again_moves_it() -> None:
    deadlines = Deadlines()
    deadlines.set(Timeout.HELLO, 10.0)
    deadlines.clear(Timeout.HELLO)
    assert deadlines.expired(20.0) == []
    deadlines.set(Timeout.GRACE, 10.0)
    deadlines.set(Timeout.GRACE, 50.0)  # a second suspension: the new grace counts
    assert deadlines.expired(20.0) == [] and deadlines.next() == 50.0
    deadlines.clear_all()
    assert deadlines.next() is None


def test_two_deadlines_due_together_come_out_earliest_first() -> None:
    deadlines = Deadlines()
    deadlines.set(Timeout.GRACE, 5.0)
    deadlines.set(Timeout.HELLO, 7.0)
    assert deadlines.expired(8.0) == [Timeout.GRACE, Timeout.HELLO]


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    middle = Backoff(first=0.1, cap=1.0, rng=FixedRandom(0.5))  # type: ignore[arg-type]
    assert [round(middle.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    middle.reset()
    assert middle.next_delay() == 0.1
    low, high = Backoff(rng=FixedRandom(0.0)), Backoff(rng=FixedRandom(0.999))  # type: ignore[arg-type]
    assert low.next_delay() == 0.05 and 0.149 < high.next_delay() < 0.15
