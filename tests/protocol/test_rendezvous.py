"""The relay rendezvous: preamble, messages, and each end's phase table.

Invariants checked: the bytes of each message are as docs/wire-format.md says; encode->decode is
the identity; any split of a valid stream yields the same messages and the same bytes handed
over after PAIRED; a length over the limit is refused as soon as its 4 bytes arrive; garbage
raises RemoteProtocolError and nothing else; every (role, phase, message) outside the table
is refused.
"""

from __future__ import annotations

import contextlib
import itertools

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.protocol import rendezvous as rv
from comtunnel.protocol.errors import LocalProtocolError, RemoteProtocolError

TOKEN = bytes(range(16))


def test_preamble_names_the_role() -> None:
    assert rv.preamble(rv.Role.CLIENT) == b"CTRELAYC"
    assert rv.preamble(rv.Role.HUB) == b"CTRELAYH"
    assert rv.classify(b"CTRELAYH\x16\x03") is rv.Role.HUB
    assert rv.classify(b"CTREL") is None  # not yet


@pytest.mark.parametrize("data", [b"\x16\x03\x01\x02", b"GET / HTTP/1.1", b"CTRELAYX", b"CTRELAy"])
def test_a_wrong_preamble_is_refused_at_once(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        rv.classify(data)


def test_a_bare_tls_client_is_told_what_is_missing() -> None:
    with pytest.raises(RemoteProtocolError, match="without comtunnel's preamble"):
        rv.classify(b"\x16")


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (rv.Register(), [1, 1]),
        (rv.Registered(("lab", "10.0.0.5")), [2, ["lab", "10.0.0.5"]]),
        (rv.Request("lab"), [3, 1, "lab"]),
        (rv.Offer(TOKEN), [4, TOKEN]),
        (rv.Attach(TOKEN), [5, 1, TOKEN]),
        (rv.Paired(), [6]),
        (rv.Error(rv.Code.NO_SUCH_HUB, "no hub"), [7, 3, "no hub"]),
        (rv.Ping(), [8]),
        (rv.Pong(), [9]),
    ],
)
def test_the_bytes_of_each_message(message: rv.Message, fields: list[object]) -> None:
    body = msgpack.packb(fields, use_bin_type=True)
    assert rv.encode(message) == len(body).to_bytes(4, "big") + body
    assert rv.decode(body) == message


names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=rv.MAX_NAME).filter(
    str.isprintable
)
message_st = st.one_of(
    st.builds(rv.Register),
    st.builds(rv.Registered, st.lists(names, max_size=rv.MAX_NAMES).map(tuple)),
    st.builds(rv.Request, names),
    st.builds(rv.Offer, st.binary(min_size=16, max_size=16)),
    st.builds(rv.Attach, st.binary(min_size=16, max_size=16)),
    st.just(rv.Paired()),
    st.builds(rv.Error, st.sampled_from(list(rv.Code)), st.text(max_size=rv.MAX_ERROR_MESSAGE)),
    st.just(rv.Ping()),
    st.just(rv.Pong()),
)


@given(message_st)
@settings(max_examples=200, deadline=None)
def test_encode_then_decode_is_the_identity(message: rv.Message) -> None:
    assert rv.decode(rv.encode(message)[rv.HEADER_SIZE :]) == message


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_remote_protocol_error(data: bytes) -> None:
    for role, relay in itertools.product(rv.Role, (True, False)):
        with contextlib.suppress(RemoteProtocolError):
            rv.Rendezvous(role, relay=relay).receive_data(data)
        with contextlib.suppress(RemoteProtocolError):
            rv.decode(data)


@given(st.lists(st.integers(-(2**40), 2**40) | st.binary(max_size=20) | st.text(max_size=5) | st.none(), max_size=4))
@settings(max_examples=300, deadline=None)
def test_wrong_shapes_raise_only_remote_protocol_error(fields: list[object]) -> None:
    for kind in rv.MessageType:
        with contextlib.suppress(RemoteProtocolError):
            rv.decode(msgpack.packb([int(kind), *fields], use_bin_type=True))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ([3, 1, "lab", "extra"], "REQUEST must carry"),
        ([3, 1, b"lab"], "REQUEST must carry"),
        ([4, b"short"], "a token is 16 bytes"),
        ([3, 1, ""], "1 to 253 printable"),
        ([3, 1, "a\nb"], "printable"),
        ([2, ["x"] * (rv.MAX_NAMES + 1)], "more than"),
        ([99], "unknown rendezvous message type"),
        ({"t": 1}, "not an array"),
    ],
)
def test_strict_decoding(fields: object, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        rv.decode(msgpack.packb(fields, use_bin_type=True))


def test_trailing_bytes_in_a_body_are_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        rv.decode(msgpack.packb([6], use_bin_type=True) + b"\x00")


def test_a_length_over_the_limit_is_refused_with_its_header() -> None:
    end = rv.Rendezvous(rv.Role.CLIENT, relay=True)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        end.receive_data((rv.MAX_MESSAGE + 1).to_bytes(4, "big"))


def test_another_version_is_refused_with_its_own_code() -> None:
    end = rv.Rendezvous(rv.Role.CLIENT, relay=True)
    with pytest.raises(rv.RendezvousError, match="version 2") as caught:
        end.receive_data(rv.encode(rv.Request("lab", version=2)))
    assert caught.value.reason is rv.Code.VERSION_MISMATCH


def pair(role: rv.Role, first: rv.Message) -> tuple[rv.Rendezvous, rv.Rendezvous]:
    """The dialler's end and the relay's, after ``first`` went from one to the other."""
    dialler, relay = rv.Rendezvous(role, relay=False), rv.Rendezvous(role, relay=True)
    assert relay.receive_data(dialler.send(first)) == [first]
    return dialler, relay


@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6))
@settings(max_examples=200, deadline=None)
def test_any_split_gives_the_same_messages_and_hands_over_the_rest(inner: bytes, cuts: list[int]) -> None:
    dialler, relay = pair(rv.Role.HUB, rv.Register())
    stream = relay.send(rv.Registered(("lab",))) + relay.send(rv.Offer(TOKEN)) + relay.send(rv.Pong())
    assert dialler.receive_data(stream) == [rv.Registered(("lab",)), rv.Offer(TOKEN), rv.Pong()]

    client, relay = pair(rv.Role.CLIENT, rv.Request("lab"))
    stream = relay.send(rv.Paired()) + inner
    bounds = [0, *sorted(c for c in cuts if c <= len(stream)), len(stream)]
    got, fed = [], 0
    for start, end in itertools.pairwise(bounds):
        if client.phase is rv.Phase.PAIRED:
            break  # the shell passes bytes straight on from here
        got += client.receive_data(stream[start:end])
        fed = end
    assert got == [rv.Paired()]
    assert client.phase is rv.Phase.PAIRED
    assert client.passthrough() + stream[fed:] == inner


def test_byte_at_a_time_is_the_same_as_whole() -> None:
    client, relay = pair(rv.Role.CLIENT, rv.Request("lab"))
    stream = relay.send(rv.Paired()) + b"\x16\x03\x03TLS"
    got = []
    for i in range(len(stream)):
        got += client.receive_data(stream[i : i + 1])
        if client.phase is rv.Phase.PAIRED:
            assert client.passthrough() + stream[i + 1 :] == b"\x16\x03\x03TLS"
            break
    assert got == [rv.Paired()]


def test_after_error_nothing_more_is_read() -> None:
    client, relay = pair(rv.Role.CLIENT, rv.Request("lab"))
    stream = relay.send(rv.Error(rv.Code.NO_SUCH_HUB, "no hub named 'lab'")) + b"junk that is not a message"
    assert client.receive_data(stream) == [rv.Error(rv.Code.NO_SUCH_HUB, "no hub named 'lab'")]
    assert client.phase is rv.Phase.CLOSED
    assert client.receive_data(b"more") == []


def test_unknown_error_codes_from_a_newer_relay_are_kept() -> None:
    assert rv.decode(msgpack.packb([7, 77, "new"], use_bin_type=True)) == rv.Error(77, "new")


# --- the phase table: every message in every phase, for both ends ---------------------------------

ALL = [
    rv.Register(),
    rv.Registered(("lab",)),
    rv.Request("lab"),
    rv.Offer(TOKEN),
    rv.Attach(TOKEN),
    rv.Paired(),
    rv.Error(rv.Code.TIMEOUT, "late"),
    rv.Ping(),
    rv.Pong(),
]
# What the relay accepts from each dialler, by phase (and the phase it leads to).
FROM_DIALLER = {
    (rv.Role.HUB, rv.Phase.START, rv.MessageType.REGISTER): rv.Phase.CONTROL,
    (rv.Role.HUB, rv.Phase.START, rv.MessageType.ATTACH): rv.Phase.PENDING,
    (rv.Role.HUB, rv.Phase.CONTROL, rv.MessageType.PING): rv.Phase.CONTROL,
    (rv.Role.CLIENT, rv.Phase.START, rv.MessageType.REQUEST): rv.Phase.PENDING,
}
SETUP = {  # how a relay-side end reaches each phase
    rv.Phase.START: [],
    rv.Phase.CONTROL: [rv.Register()],
    rv.Phase.PENDING: {rv.Role.HUB: [rv.Attach(TOKEN)], rv.Role.CLIENT: [rv.Request("lab")]},
}


PHASES = [(rv.Role.HUB, rv.Phase.START), (rv.Role.HUB, rv.Phase.CONTROL), (rv.Role.HUB, rv.Phase.PENDING)]
PHASES += [(rv.Role.CLIENT, rv.Phase.START), (rv.Role.CLIENT, rv.Phase.PENDING)]  # a client has no control phase


@pytest.mark.parametrize(("role", "phase"), PHASES)
@pytest.mark.parametrize("message", ALL, ids=lambda m: m.TYPE.name)
def test_the_relay_accepts_exactly_the_table(role: rv.Role, phase: rv.Phase, message: rv.Message) -> None:
    steps = SETUP[phase]
    steps = steps[role] if isinstance(steps, dict) else steps
    end = rv.Rendezvous(role, relay=True)
    for step in steps:
        end.receive_data(rv.encode(step))
    assert end.phase is phase
    key = (role, phase, message.TYPE)
    if key in FROM_DIALLER:
        assert end.receive_data(rv.encode(message)) == [message]
        assert end.phase is FROM_DIALLER[key]
    else:
        with pytest.raises(RemoteProtocolError):
            end.receive_data(rv.encode(message))


def test_sending_out_of_turn_is_our_own_error() -> None:
    client = rv.Rendezvous(rv.Role.CLIENT, relay=False)
    with pytest.raises(LocalProtocolError):
        client.send(rv.Register())
    relay = rv.Rendezvous(rv.Role.CLIENT, relay=True)
    with pytest.raises(LocalProtocolError):
        relay.send(rv.Paired())  # nothing was requested yet
    with pytest.raises(LocalProtocolError):
        relay.passthrough()
