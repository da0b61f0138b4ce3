"""The relay's policy: registry by certificate names, replacement, pending pairings with deadlines,
idle pairings, limits; and, over random sequences of events, that its tables stay consistent."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.policy.admission import AdmissionLimits
from comtunnel.policy.relay import Pairing, Pending, Refusal, RelayLimits, RelayPolicy
from comtunnel.protocol.rendezvous import Code

LAB = ("lab", "lab.example.org", "10.0.0.5")


def policy(**limits: object) -> RelayPolicy:
    counter = itertools.count()
    return RelayPolicy(RelayLimits(**limits), token_source=lambda: next(counter).to_bytes(16, "big"))  # type: ignore[arg-type]


def test_a_hub_is_found_under_every_name_of_its_certificate() -> None:
    relay = policy()
    assert relay.register(1, LAB, "192.0.2.1:4000", now=0.0) == []
    for name in LAB:
        pending = relay.request(10, "alice", name, now=1.0)
        assert isinstance(pending, Pending)
        assert relay.control_for(pending) == 1


def test_an_unknown_name_is_no_such_hub() -> None:
    relay = policy()
    relay.register(1, LAB, "a", now=0.0)
    answer = relay.request(10, "alice", "other", now=0.0)
    assert answer == Refusal(Code.NO_SUCH_HUB, "no hub named 'other' is registered at this relay")
    assert relay.refused == {"NO_SUCH_HUB": 1}


def test_a_newer_registration_replaces_the_old_one() -> None:
    relay = policy()
    relay.register(1, LAB, "old", now=0.0)
    assert relay.register(2, ("lab",), "new", now=5.0) == [1]
    # the old connection's other names went with it: one hub, one registration
    assert set(relay.hubs) == {"lab"} and relay.hubs["lab"].conn == 2
    assert relay.left(1) is None  # the old connection closing later changes nothing
    assert relay.hubs["lab"].conn == 2


def test_attach_pairs_the_waiting_client_with_the_hub_that_holds_the_name() -> None:
    relay = policy()
    relay.register(1, LAB, "a", now=0.0)
    pending = relay.request(10, "alice", "lab", now=1.0)
    assert isinstance(pending, Pending)
    pairing = relay.attach(20, pending.token, LAB, now=2.0)
    assert isinstance(pairing, Pairing)
    assert (pairing.client, pairing.hub, pairing.client_name, pairing.hub_name) == (10, 20, "alice", "lab")
    assert relay.pending == {}
    relay.forwarded(10, 100, now=3.0)
    relay.forwarded(20, 7, now=4.0)
    assert (pairing.bytes_to_hub, pairing.bytes_to_client, pairing.last_active) == (100, 7, 4.0)


def test_a_token_is_good_once_and_only_for_the_hub_it_was_offered_to() -> None:
    relay = policy()
    relay.register(1, LAB, "a", now=0.0)
    relay.register(2, ("other",), "b", now=0.0)
    pending = relay.request(10, "alice", "lab", now=1.0)
    assert isinstance(pending, Pending)
    wrong = relay.attach(21, pending.token, ("other",), now=1.5)
    assert isinstance(wrong, Refusal) and wrong.code is Code.BAD_TOKEN
    assert isinstance(relay.attach(20, pending.token, LAB, now=2.0), Pairing)  # still valid for lab
    again = relay.attach(22, pending.token, LAB, now=2.0)
    assert isinstance(again, Refusal) and again.code is Code.BAD_TOKEN


def test_a_hub_that_does_not_attach_in_time_times_the_client_out() -> None:
    relay = policy(attach_timeout=10.0)
    relay.register(1, LAB, "a", now=0.0)
    pending = relay.request(10, "alice", "lab", now=1.0)
    assert isinstance(pending, Pending)
    assert relay.next_deadline() == 11.0
    assert relay.expire(10.9).waits == []
    assert relay.expire(11.0).waits == [pending]
    assert relay.pending == {} and relay.next_deadline() is None
    late = relay.attach(20, pending.token, LAB, now=12.0)
    assert isinstance(late, Refusal) and late.code is Code.BAD_TOKEN


def test_an_idle_pairing_is_closed_and_traffic_keeps_it() -> None:
    relay = policy(idle_timeout=60.0)
    relay.register(1, LAB, "a", now=0.0)
    pending = relay.request(10, "alice", "lab", now=0.0)
    assert isinstance(pending, Pending)
    pairing = relay.attach(20, pending.token, LAB, now=0.0)
    relay.forwarded(20, 1, now=50.0)
    assert relay.next_deadline() == 110.0
    assert relay.expire(100.0).idle == []
    assert relay.expire(110.0).idle == [pairing]
    assert relay.pairings == {}


def test_busy_hub_and_busy_relay() -> None:
    relay = policy(pending_per_hub=2, pairings=3)
    relay.register(1, LAB, "a", now=0.0)
    relay.register(2, ("b",), "b", now=0.0)
    assert isinstance(relay.request(10, "alice", "lab", now=0.0), Pending)
    assert isinstance(relay.request(11, "bob", "10.0.0.5", now=0.0), Pending)  # the same hub, another name
    busy = relay.request(12, "carol", "lab", now=0.0)
    assert isinstance(busy, Refusal) and busy.code is Code.HUB_BUSY
    assert isinstance(relay.request(13, "dave", "b", now=0.0), Pending)
    full = relay.request(14, "erin", "b", now=0.0)
    assert isinstance(full, Refusal) and full.code is Code.RELAY_BUSY


def test_either_end_leaving_ends_the_pairing_and_names_the_partner() -> None:
    relay = policy()
    relay.register(1, LAB, "a", now=0.0)
    pending = relay.request(10, "alice", "lab", now=0.0)
    assert isinstance(pending, Pending)
    relay.attach(20, pending.token, LAB, now=0.0)
    assert relay.left(20) == 10
    assert relay.pairings == {}
    assert relay.left(10) is None
    # a waiting client that leaves takes its wait with it
    pending = relay.request(11, "bob", "lab", now=0.0)
    relay.left(11)
    assert relay.pending == {}


def test_the_snapshot_holds_names_and_counts_only() -> None:
    relay = policy()
    relay.register(1, LAB, "192.0.2.1:4000", now=0.0)
    pending = relay.request(10, "alice", "lab", now=0.0)
    assert isinstance(pending, Pending)
    relay.attach(20, pending.token, LAB, now=1.0)
    relay.forwarded(10, 42, now=2.0)
    snapshot = relay.snapshot(now=3.0)
    assert snapshot["hubs"] == [{"names": list(LAB), "address": "192.0.2.1:4000", "age": 3.0}]
    assert snapshot["pairings"] == [
        {"client": "alice", "hub": "lab", "age": 2.0, "bytes_to_hub": 42, "bytes_to_client": 0}
    ]


def test_admission_limits_unauthenticated_connections_per_source() -> None:
    relay = policy(admission=AdmissionLimits(per_source=2))
    assert relay.admission.arrive("198.51.100.7") is None
    assert relay.admission.arrive("198.51.100.7") is None
    assert relay.admission.arrive("198.51.100.7") is not None
    assert relay.admission.arrive("198.51.100.8") is None


@pytest.mark.parametrize(
    "limits", [{"attach_timeout": 0}, {"idle_timeout": -1}, {"pairings": 0}, {"write_low": 10, "write_high": 5}]
)
def test_nonsense_limits_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RelayLimits(**limits)  # type: ignore[arg-type]


# --- random sequences ----------------------------------------------------------------------------

HUB_NAMES = [("a",), ("b", "a2"), ("c",), ("a", "c")]
event = st.one_of(
    st.tuples(st.just("register"), st.integers(1, 6), st.sampled_from(HUB_NAMES)),
    st.tuples(st.just("request"), st.integers(10, 16), st.sampled_from(["a", "a2", "b", "c", "x"])),
    st.tuples(st.just("attach"), st.integers(20, 26), st.integers(0, 20), st.sampled_from(HUB_NAMES)),
    st.tuples(st.just("forward"), st.integers(10, 26), st.integers(1, 1000)),
    st.tuples(st.just("left"), st.integers(1, 26)),
    st.tuples(st.just("tick"), st.floats(0, 30)),
)


@given(st.lists(event, max_size=60))
@settings(max_examples=300, deadline=None)
def test_the_tables_stay_consistent(events: list[tuple[object, ...]]) -> None:
    relay = policy(attach_timeout=10.0, idle_timeout=20.0, pending_per_hub=3, pairings=4)
    now = 0.0
    closed: set[int] = set()
    for item in events:
        match item:
            case ("register", int(conn), tuple(names)) if conn not in closed:
                for old in relay.register(conn, names, "x", now):
                    relay.left(old)
                    closed.add(old)
            case ("request", int(conn), str(name)) if conn not in closed and conn not in relay.pairings:
                if all(p.client != conn for p in relay.pending.values()):
                    relay.request(conn, "c", name, now)
            case ("attach", int(conn), int(index), tuple(names)) if conn not in closed and conn not in relay.pairings:
                tokens = list(relay.pending)
                token = tokens[index % len(tokens)] if tokens else b"\0" * 16
                relay.attach(conn, token, names, now)
            case ("forward", int(conn), int(size)) if conn in relay.pairings:
                relay.forwarded(conn, size, now)
            case ("left", int(conn)):
                partner = relay.left(conn)
                closed.add(conn)
                if partner is not None:
                    relay.left(partner)
                    closed.add(partner)
            case ("tick", float(step)):
                now += step
                expired = relay.expire(now)
                assert all(p.deadline <= now for p in expired.waits)
                for pairing in expired.idle:
                    assert pairing.last_active + 20.0 <= now
                deadline = relay.next_deadline()
                assert deadline is None or deadline > now  # nothing overdue is left behind
        # a name leads to one registration, whose names include it
        for name, registration in relay.hubs.items():
            assert name in registration.names and registration.conn not in closed
        # pairings are symmetric, and no connection is both paired and waiting
        for conn, pairing in relay.pairings.items():
            assert relay.pairings[pairing.partner(conn)] is pairing and conn not in closed
        assert not {p.client for p in relay.pending.values()} & set(relay.pairings)
        # the limits hold
        for registration in relay.registrations():
            waiting = [p for p in relay.pending.values() if p.hub_name in registration.names]
            assert len(waiting) <= 3
        assert len(relay.pairings) // 2 + len(relay.pending) <= 4
