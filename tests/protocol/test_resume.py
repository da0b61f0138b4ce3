"""Session resumption in the sans-I/O core: cut the wire anywhere, resume, and every byte arrives once.

The harness plays both drivers: it moves bytes between a client and a hub Connection, lets the
consumers take what arrived, and at a cut throws away whatever was still on the wire (as a dead TCP
connection does) before building the next pair of Connections the way the hub and client do.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.protocol import events as ev
from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import encode_frame
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.limits import PROTOCOL_VERSION
from comtunnel.protocol.mux import ChannelState, Connection, Role
from comtunnel.protocol.settings import PortSettings


class Pair:
    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self.generation = 0
        self.client = Connection(Role.CLIENT, window=window)
        self.hub = Connection(Role.HUB, window=window, session_token="s0")
        self.session_hub = self.hub  # the hub Connection that holds the session's channels
        self.wire = {Role.CLIENT: bytearray(), Role.HUB: bytearray()}  # bytes on their way from that side
        self.sent: dict[tuple[Role, int], bytearray] = {}
        self.got: dict[tuple[Role, int], bytearray] = {}
        self.held: dict[tuple[Role, int], int] = {}
        self.events: list[tuple[Role, ev.Event]] = []
        self.collect()

    def conn(self, side: Role) -> Connection:
        return self.client if side is Role.CLIENT else self.hub

    def collect(self) -> None:
        for side in Role:
            self.wire[side] += self.conn(side).data_to_send()

    def deliver(self, side: Role, size: int | None = None) -> None:
        size = len(self.wire[side]) if size is None else size
        chunk = bytes(self.wire[side][:size])
        del self.wire[side][:size]
        receiver = Role.HUB if side is Role.CLIENT else Role.CLIENT
        for event in self.conn(receiver).receive_data(chunk):
            self.on_event(receiver, event)
        self.collect()

    def on_event(self, side: Role, event: ev.Event) -> None:
        self.events.append((side, event))
        match event:
            case ev.ChannelOpenRequested(cid):
                self.hub.accept_channel(cid, PortSettings())
            case ev.DataReceived(cid, data):
                self.got.setdefault((side, cid), bytearray()).extend(data)
                self.held[(side, cid)] = self.held.get((side, cid), 0) + len(data)
            case ev.ResumeRequested(token, channels):
                assert token == self.session_hub.session_token
                self.hub.accept_resume(self.session_hub, channels)
                self.session_hub = self.hub

    def settle(self) -> None:
        for _ in range(200):
            for side in Role:
                self.deliver(side)
            self.consume_all()
            if not any(self.wire.values()):
                return
        raise AssertionError("no quiet state")

    def consume_all(self) -> None:
        for (side, cid), held in self.held.items():
            if held:
                self.conn(side).consume(cid, held)
        self.held = dict.fromkeys(self.held, 0)
        self.collect()

    def send(self, side: Role, cid: int, data: bytes) -> int:
        conn = self.conn(side)
        n = min(len(data), conn.send_window(cid))
        if n:
            conn.send_data(cid, data[:n])
            self.sent.setdefault((side, cid), bytearray()).extend(data[:n])
        self.collect()
        return n

    def cut(self) -> None:
        """The TCP connection dies: what was on the wire is gone; both sides build new Connections."""
        self.wire = {Role.CLIENT: bytearray(), Role.HUB: bytearray()}
        self.generation += 1
        self.client = Connection(Role.CLIENT, window=self.window, resume_from=self.client)
        self.hub = Connection(Role.HUB, window=self.window, session_token=f"s{self.generation}")
        self.collect()

    def stream(self, side: Role, cid: int, attr: str) -> bytes:
        return bytes(getattr(self, attr).get((side, cid), b""))

    def assert_exact(self) -> None:
        for (side, cid), sent in self.sent.items():
            receiver = Role.HUB if side is Role.CLIENT else Role.CLIENT
            assert self.stream(receiver, cid, "got") == bytes(sent), f"{side.value} channel {cid}"


def open_pair(channels: int = 2, window: int = 4096) -> Pair:
    pair = Pair(window)
    pair.settle()
    for _ in range(channels):
        pair.client.open_channel("p", PortSettings())
    pair.collect()
    pair.settle()
    return pair


def test_hub_hello_names_the_session_and_client_learns_it() -> None:
    pair = open_pair()
    assert pair.client.session_token == "s0"


def test_resume_after_a_cut_with_bytes_in_flight_both_ways() -> None:
    pair = open_pair()
    pair.send(Role.CLIENT, 1, b"a" * 3000)
    pair.send(Role.HUB, 1, b"b" * 3000)
    pair.send(Role.HUB, 2, b"c" * 100)
    pair.deliver(Role.CLIENT, 1500)  # half of the client's bytes arrive
    pair.cut()
    pair.settle()
    resumed = [e for s, e in pair.events if isinstance(e, ev.SessionResumed)]
    assert resumed == [ev.SessionResumed([1, 2], {})]
    assert pair.client.session_token == "s0"  # the session keeps its name
    pair.send(Role.CLIENT, 1, b"x" * 500)
    pair.settle()
    pair.assert_exact()
    assert pair.client.channel_state(1) is ChannelState.OPEN
    assert pair.hub.channel_state(2) is ChannelState.OPEN


def test_credit_is_exact_after_resume() -> None:
    """Bytes received but not consumed before the cut keep their credit withheld, no more, no less."""
    pair = open_pair(1, window=1000)
    assert pair.send(Role.HUB, 1, b"z" * 1000) == 1000
    pair.deliver(Role.HUB)  # arrives, but the consumer takes nothing
    pair.cut()
    for side in Role:
        pair.deliver(side)
    assert pair.hub.send_window(1) == 0  # the client still holds 1000 unconsumed bytes
    pair.consume_all()
    pair.settle()
    assert pair.hub.send_window(1) == 1000
    pair.assert_exact()


def test_refused_resume_counts_what_was_never_confirmed() -> None:
    pair = open_pair()
    pair.send(Role.CLIENT, 1, b"q" * 700)
    pair.cut()
    pair.on_event = lambda side, event: (  # type: ignore[method-assign]
        pair.hub.refuse_resume(ErrorCode.NORMAL, "no such session") if isinstance(event, ev.ResumeRequested) else None
    )
    pair.settle()
    refused = [e for _, e in pair.events if isinstance(e, ev.ResumeRefused)]
    assert not refused  # events were not recorded by the replaced handler; check the state instead
    assert pair.client.channel_state(1) is None
    assert pair.client.session_token == "s1"  # a new session from the hub's HELLO


def test_refused_resume_event_reports_losses() -> None:
    client = Connection(Role.CLIENT)
    hub = Connection(Role.HUB, session_token="t")
    hub.receive_data(client.data_to_send())
    client.receive_data(hub.data_to_send())
    cid = client.open_channel("p", PortSettings())
    for e in hub.receive_data(client.data_to_send()):
        assert isinstance(e, ev.ChannelOpenRequested)
        hub.accept_channel(cid, PortSettings())
    client.receive_data(hub.data_to_send())
    client.send_data(cid, b"12345")
    client2 = Connection(Role.CLIENT, resume_from=client)
    hub2 = Connection(Role.HUB, session_token="u")
    events = hub2.receive_data(client2.data_to_send())
    assert events[-1] == ev.ResumeRequested("t", [(cid, 0, 0)])
    hub2.refuse_resume(ErrorCode.NORMAL, "the hub restarted")
    events = client2.receive_data(hub2.data_to_send())
    assert events[-1] == ev.ResumeRefused(ErrorCode.NORMAL, "the hub restarted", {cid: 5})
    assert client2.session_token == "u"
    assert client2.open_channel("p", PortSettings()) == cid + 1  # ids never repeat in a session's life


def test_hub_drops_channels_the_client_no_longer_has() -> None:
    pair = open_pair(2)
    old_hub = pair.hub
    client2 = Connection(Role.CLIENT, resume_from=pair.client)
    hub2 = Connection(Role.HUB, session_token="n")
    events = hub2.receive_data(client2.data_to_send())
    request = events[-1]
    assert isinstance(request, ev.ResumeRequested)
    assert hub2.accept_resume(old_hub, request.channels[:1]) == [2]
    assert hub2.channel_state(1) is ChannelState.OPEN and hub2.channel_state(2) is None
    events = client2.receive_data(hub2.data_to_send())
    assert events[-1] == ev.SessionResumed([1], {2: 0})


@pytest.mark.parametrize(
    "frame",
    [
        fr.Resumed([]),
        fr.ResumeFail(ErrorCode.NORMAL, "x"),
    ],
)
def test_resume_answers_without_a_resume_are_protocol_errors(frame: fr.Frame) -> None:
    client = Connection(Role.CLIENT)
    client.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {"session": "a"})))
    with pytest.raises(RemoteProtocolError, match="without a RESUME"):
        client.receive_data(encode_frame(frame))


def test_resume_must_directly_follow_hello() -> None:
    hub = Connection(Role.HUB, session_token="a")
    hub.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {})) + encode_frame(fr.Ping(1)))
    with pytest.raises(RemoteProtocolError, match="directly follow HELLO"):
        hub.receive_data(encode_frame(fr.Open(1, "p", PortSettings(), fr.ControlRequest(), 10)))
        hub.receive_data(encode_frame(fr.Resume("a", [])))


def test_resumed_naming_an_unknown_channel_is_refused() -> None:
    client = Connection(Role.CLIENT)
    client.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {"session": "a"})))
    client2 = Connection(Role.CLIENT, resume_from=client)
    client2.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {"session": "b"})))
    with pytest.raises(RemoteProtocolError, match="did not resume"):
        client2.receive_data(encode_frame(fr.Resumed([(9, 0, 0)])))


def test_peer_claiming_bytes_we_never_sent_is_refused() -> None:
    pair = open_pair(1)
    client2 = Connection(Role.CLIENT, resume_from=pair.client)
    client2.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {"session": "b"})))
    with pytest.raises(RemoteProtocolError, match="claims"):
        client2.receive_data(encode_frame(fr.Resumed([(1, 10, 0)])))


# --- the property: any schedule of sends, partial deliveries and cuts loses and doubles nothing -----

step_st = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(list(Role)), st.integers(1, 2), st.integers(1, 5000)),
    st.tuples(st.just("deliver"), st.sampled_from(list(Role)), st.integers(0, 6000)),
    st.tuples(st.just("consume")),
    st.tuples(st.just("cut")),
)


@given(st.lists(step_st, max_size=40), st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_no_byte_lost_or_doubled_across_any_cuts(steps: list[tuple], rnd: object) -> None:
    pair = open_pair(2, window=4096)
    counter = 0
    for step in steps:
        match step:
            case ("send", side, cid, size):
                counter += 1
                data = bytes((counter + i) % 251 for i in range(size))
                pair.send(side, cid, data)
            case ("deliver", side, size):
                pair.deliver(side, size)
            case ("consume",):
                pair.consume_all()
            case ("cut",):
                pair.cut()
        for (side, cid), got in pair.got.items():  # never anything out of order or invented
            sender = Role.HUB if side is Role.CLIENT else Role.CLIENT
            assert bytes(got) == bytes(pair.sent.get((sender, cid), b""))[: len(got)]
    pair.settle()
    pair.assert_exact()
    for side in Role:
        for cid in (1, 2):
            assert pair.conn(side).channel_state(cid) is ChannelState.OPEN
            assert pair.conn(side).unacknowledged(cid) < 4096


# --- hostile resumption frames: only our own protocol error, never anything else --------------

hostile_offsets = st.lists(
    st.tuples(st.integers(0, 2**32), st.integers(0, 2**40), st.integers(0, 2**40)).map(
        lambda t: (t[0], max(t[1], t[2]), min(t[1], t[2]))
    ),
    max_size=5,
)
hostile_frame = st.one_of(
    st.builds(fr.Resumed, hostile_offsets),
    st.builds(fr.ResumeFail, st.integers(0, 0xFFFF), st.text(max_size=50)),
    st.builds(fr.DeviceStatus, st.integers(0, 5), st.sampled_from(fr.DEVICE_STATES), st.text(max_size=50)),
    st.builds(fr.Data, st.integers(0, 5), st.binary(max_size=100)),
    st.builds(fr.WindowUpdate, st.integers(0, 5), st.integers(0, 2**31)),
)


@given(st.lists(hostile_frame, max_size=6), st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_a_resuming_client_survives_any_hub_frames(frames: list[fr.Frame], tail: bytes) -> None:
    pair = open_pair(2)
    pair.send(Role.CLIENT, 1, b"u" * 100)
    client = Connection(Role.CLIENT, resume_from=pair.client)
    client.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {"session": "x"})))
    try:
        for frame in frames:
            client.receive_data(encode_frame(frame))
        client.receive_data(tail)
    except RemoteProtocolError:
        assert client.closed
        assert client.receive_data(encode_frame(fr.Ping(1))) == []  # nothing after the error


@given(hostile_offsets, st.text(max_size=70))
@settings(max_examples=200, deadline=None)
def test_hub_accepting_a_hostile_resume_raises_only_our_error(offsets: list[tuple[int, int, int]], token: str) -> None:
    pair = open_pair(2)
    pair.send(Role.HUB, 1, b"d" * 300)
    hub = Connection(Role.HUB, session_token="n")
    hub.receive_data(encode_frame(fr.Hello(PROTOCOL_VERSION, {})))
    try:
        events = hub.receive_data(encode_frame(fr.Resume(token[:64], offsets)))
    except RemoteProtocolError:
        return
    assert isinstance(events[-1], ev.ResumeRequested)
    with contextlib.suppress(RemoteProtocolError):
        hub.accept_resume(pair.hub, events[-1].channels)
