"""The hub's port decisions on a fake clock: no sockets, no devices."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from comtunnel.access import Access, AccessPolicy
from comtunnel.policy.registry import PortRegistry, PortState, Verdict
from comtunnel.protocol.errors import ErrorCode

PORTS = ["a", "b"]


@dataclasses.dataclass
class Session:
    client: str
    detached_at: float | None = None


def test_an_unknown_port_names_the_ports_there_are() -> None:
    decision = PortRegistry().decide("alice", "c", PORTS)
    assert decision.verdict is Verdict.REFUSE
    assert decision.code is ErrorCode.UNKNOWN_PORT
    assert decision.message == "no port named 'c' (ports: a, b)"


def test_a_free_port_opens_and_a_held_one_names_its_holder_and_since_when() -> None:
    registry = PortRegistry()
    assert registry.decide("alice", "a", PORTS).verdict is Verdict.OPEN
    holder = registry.claim("a", "alice", Session("alice"), now=0.0)
    assert registry.state("a") is PortState.IN_USE
    decision = registry.decide("bob", "a", PORTS)
    assert (decision.verdict, decision.code, decision.holder) == (Verdict.REFUSE, ErrorCode.PORT_BUSY, holder)
    assert decision.message.startswith("port 'a' is in use by alice since ")
    assert registry.decide("bob", "b", PORTS).verdict is Verdict.OPEN


def test_a_disconnected_holder_keeps_the_port_until_its_grace_ends_and_says_until_when() -> None:
    registry = PortRegistry(grace=60.0)
    away = Session("alice")
    registry.claim("a", "alice", away, now=0.0)
    away.detached_at = 1000.0
    assert registry.state("a") is PortState.HELD_FOR_DISCONNECTED
    decision = registry.decide("bob", "a", PORTS)
    assert decision.verdict is Verdict.REFUSE and "(disconnected; kept for it until " in decision.message
    # The same client, restarted: its old session gives the port back.
    assert registry.decide("alice", "a", PORTS).verdict is Verdict.TAKE_BACK


def test_a_leaving_holder_makes_the_newcomer_wait_and_then_ask_again() -> None:
    registry = PortRegistry()
    holder = registry.claim("a", "alice", Session("alice"), now=0.0)
    holder.closing = True
    woken: list[str] = []
    holder.on_release.append(lambda: woken.append("bob"))
    assert registry.decide("bob", "a", PORTS).verdict is Verdict.WAIT
    registry.release("a", holder)
    assert woken == ["bob"] and registry.state("a") is PortState.FREE
    assert registry.decide("bob", "a", PORTS, retried=True).verdict is Verdict.OPEN


def test_asking_again_after_the_wait_is_busy_if_someone_else_got_there() -> None:
    registry = PortRegistry()
    registry.claim("a", "carol", None, now=0.0)  # a hub gateway's TCP client
    decision = registry.decide("bob", "a", PORTS, retried=True)
    assert decision.verdict is Verdict.REFUSE and decision.message == "port 'a' is in use by carol"


def test_a_stale_release_frees_nothing_it_does_not_hold() -> None:
    registry = PortRegistry()
    old = registry.claim("a", "alice", None, now=0.0)
    new = registry.claim("a", "bob", None, now=1.0)
    registry.release("a", old)
    assert registry.holders["a"] is new


def test_access_lists_refuse_or_give_monitor_access() -> None:
    policy = AccessPolicy({"alice": {Access.FULL: ["a"], Access.MONITOR: ["b"]}})
    registry = PortRegistry(policy)
    assert registry.decide("alice", "a", PORTS).verdict is Verdict.OPEN
    assert registry.decide("alice", "b", PORTS).verdict is Verdict.MONITOR
    refused = registry.decide("mallory", "a", PORTS)
    assert (refused.verdict, refused.code) == (Verdict.REFUSE, ErrorCode.ACCESS_DENIED)
    assert "mallory" in refused.message


@given(
    st.lists(
        st.tuples(st.sampled_from(["claim", "release", "close", "detach"]), st.sampled_from(PORTS), st.integers(0, 2)),
        max_size=40,
    )
)
def test_one_holder_per_port_whatever_the_order(steps: list[tuple[str, str, int]]) -> None:
    """Claims only after an OPEN answer, releases of stale holders, holders leaving: never two
    holders, and every answer is one of the verdicts with a message when it refuses."""
    registry = PortRegistry(grace=5.0)
    clients = ["alice", "bob", "carol"]
    sessions = {c: Session(c) for c in clients}
    held = []
    for action, port, who in steps:
        client = clients[who]
        if action == "claim":
            decision = registry.decide(client, port, PORTS)
            if decision.verdict is Verdict.OPEN:
                held.append(registry.claim(port, client, sessions[client], now=0.0))
            elif decision.verdict is Verdict.REFUSE:
                assert decision.message
        elif action == "release" and held:
            registry.release(port, held.pop(who % len(held)))
        elif action == "close" and port in registry.holders:
            registry.holders[port].closing = True
        elif action == "detach":
            sessions[client].detached_at = 1.0
        assert set(registry.holders) <= set(PORTS)
