"""The multiplexer: a CLIENT and a HUB Connection wired back to back in memory.

Nothing here mocks the thing under test: both ends are real Connections and every byte between them
is real wire format (``pump`` moves ``data_to_send()`` of one into ``receive_data()`` of the other).
The stateful test at the end drives both with random operations and random delivery boundaries and
checks the invariants: per channel and direction, bytes arrive in order and intact, and the sender
never has more unconsumed bytes out than the receiver's window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import muxpair
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from muxpair import pair, pump

from comtunnel.protocol import events as ev
from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import FrameDecoder, encode_frame
from comtunnel.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from comtunnel.protocol.limits import MAX_DATA_CHUNK, MAX_MESSAGE, MAX_PORT_NAME, PROTOCOL_VERSION
from comtunnel.protocol.mux import ChannelState, Connection, Role
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, Parity, PortSettings, Purge

SETTINGS = PortSettings(115200)
ALL_BYTES = bytes(range(256))


def open_channel(client: Connection, hub: Connection, port: str = "p") -> int:
    cid = muxpair.open_channel(client, hub, port, SETTINGS)
    assert client.channel_state(cid) is hub.channel_state(cid) is ChannelState.OPEN
    return cid


def frames_in(data: bytes) -> list[fr.Frame]:
    return FrameDecoder().feed(data)


def expect_remote_error(conn: Connection, frame: fr.Frame | bytes, code: ErrorCode, match: str = "") -> None:
    """The frame is refused, a GOAWAY with the same code is queued, and the connection is dead."""
    data = frame if isinstance(frame, bytes) else encode_frame(frame)
    with pytest.raises(RemoteProtocolError, match=match) as info:
        conn.receive_data(data)
    assert info.value.code == code
    goaway = frames_in(conn.data_to_send())[-1]
    assert isinstance(goaway, fr.GoAway) and goaway.code == code and goaway.message == str(info.value)
    assert conn.closed


# --- handshake ---------------------------------------------------------------------------------------


def test_handshake() -> None:
    client = Connection(Role.CLIENT, {"software": "c/1"}, max_frame=9999)
    hub = Connection(Role.HUB, {"software": "h/1"})
    assert not client.handshake_complete and not hub.handshake_complete
    hello = frames_in(client.data_to_send())
    assert hello == [fr.Hello(PROTOCOL_VERSION, {"role": "client", "max_frame": 9999, "software": "c/1"})]
    h_events = hub.receive_data(encode_frame(hello[0]))
    c_events = client.receive_data(hub.data_to_send())
    assert h_events == [ev.HandshakeComplete({"role": "client", "max_frame": 9999, "software": "c/1"})]
    assert c_events == [ev.HandshakeComplete({"role": "hub", "max_frame": 1 << 20, "software": "h/1"})]
    assert client.handshake_complete and hub.handshake_complete
    assert hub.peer_info is not None and hub.peer_info["software"] == "c/1"


def test_handshake_and_first_frames_in_one_chunk_byte_by_byte() -> None:
    client = Connection(Role.CLIENT)
    hub = Connection(Role.HUB)
    hub.announce_ports([{"name": "gps"}])
    hub.ping(9)
    stream = hub.data_to_send()
    events = [e for i in range(len(stream)) for e in client.receive_data(stream[i : i + 1])]
    assert [type(e) for e in events] == [ev.HandshakeComplete, ev.PortsUpdated]
    assert events[1] == ev.PortsUpdated([{"name": "gps"}])
    assert frames_in(client.data_to_send())[-1] == fr.Pong(9)


def test_version_mismatch_sends_goaway_and_raises() -> None:
    hub = Connection(Role.HUB)
    hub.data_to_send()
    expect_remote_error(
        hub, fr.Hello(PROTOCOL_VERSION + 1, {}), ErrorCode.VERSION_MISMATCH, f"version {PROTOCOL_VERSION + 1}"
    )
    client = Connection(Role.CLIENT)
    client.data_to_send()
    hub2 = Connection(Role.HUB)
    with pytest.raises(RemoteProtocolError):
        hub2.receive_data(encode_frame(fr.Hello(0, {})))
    # the peer learns why before the transport closes
    assert client.receive_data(hub2.data_to_send())[-1] == ev.ConnectionTerminated(
        ErrorCode.VERSION_MISMATCH,
        f"peer speaks protocol version 0, we speak {PROTOCOL_VERSION}: upgrade the peer's comtunnel",
    )
    assert client.closed


@pytest.mark.parametrize(
    "frame",
    [fr.Ping(1), fr.Data(1, b"x"), fr.GoAway(ErrorCode.NORMAL, ""), fr.Close(1, 0, "")],
    ids=lambda f: f.TYPE.name,
)
def test_frame_before_hello_is_a_protocol_error(frame: fr.Frame) -> None:
    hub = Connection(Role.HUB)
    hub.data_to_send()
    expect_remote_error(hub, frame, ErrorCode.PROTOCOL_ERROR, "expected HELLO")


def test_second_hello_is_a_protocol_error() -> None:
    client, hub = pair()
    expect_remote_error(hub, fr.Hello(PROTOCOL_VERSION, {}), ErrorCode.PROTOCOL_ERROR, "unexpected HELLO")


def test_events_before_an_error_in_the_same_chunk_are_not_half_applied() -> None:
    client, hub = pair()
    with pytest.raises(RemoteProtocolError):
        hub.receive_data(encode_frame(fr.Ping(1)) + encode_frame(fr.Data(77, b"x")))
    assert hub.closed


# --- opening ---------------------------------------------------------------------------------------


def test_open_accept_carries_port_settings_control_and_info() -> None:
    client, hub = pair()
    requested = PortSettings(4800, 7, Parity.EVEN)
    cid = client.open_channel("gps", requested, ControlRequest(dtr=False, rts=True))
    assert client.channel_state(cid) is ChannelState.OPENING
    assert client.send_window(cid) == 0  # nothing may be sent before OPEN_OK
    with pytest.raises(LocalProtocolError, match="opening, not open"):
        client.send_data(cid, b"x")
    _, h = pump(client, hub)
    assert h == [ev.ChannelOpenRequested(cid, "gps", requested, ControlRequest(dtr=False, rts=True))]
    assert hub.channel_state(cid) is ChannelState.PENDING
    in_effect = requested.replace(baudrate=4800)
    assert hub.accept_channel(cid, in_effect, {"device": "/dev/ttyUSB0"})
    c, _ = pump(client, hub)
    assert c == [ev.ChannelOpened(cid, in_effect, {"device": "/dev/ttyUSB0"})]
    assert client.channel_state(cid) is hub.channel_state(cid) is ChannelState.OPEN
    assert client.channel_count == hub.channel_count == 1


def test_channel_ids_increase() -> None:
    client, hub = pair()
    ids = [client.open_channel(f"p{i}", SETTINGS) for i in range(4)]
    assert ids == [1, 2, 3, 4]


def test_open_reject_carries_code_and_message() -> None:
    client, hub = pair()
    cid = client.open_channel("gps", SETTINGS)
    pump(client, hub)
    assert hub.reject_channel(cid, ErrorCode.PORT_BUSY, "port 'gps' is in use by bob")
    c, _ = pump(client, hub)
    assert c == [ev.ChannelOpenFailed(cid, ErrorCode.PORT_BUSY, "port 'gps' is in use by bob")]
    assert client.channel_count == hub.channel_count == 0
    assert client.channel_state(cid) is None


def test_long_messages_are_truncated_to_what_the_peer_accepts() -> None:
    client, hub = pair()
    cid = client.open_channel("gps", SETTINGS)
    pump(client, hub)
    hub.reject_channel(cid, ErrorCode.PORT_UNAVAILABLE, "x" * 5000)
    c, _ = pump(client, hub)
    assert c == [ev.ChannelOpenFailed(cid, ErrorCode.PORT_UNAVAILABLE, "x" * MAX_MESSAGE)]


def test_port_name_too_long_is_refused_locally() -> None:
    client, hub = pair()
    with pytest.raises(LocalProtocolError, match="port name"):
        client.open_channel("p" * (MAX_PORT_NAME + 1), SETTINGS)
    assert client.data_to_send() == b""
    assert client.open_channel("p" * MAX_PORT_NAME, SETTINGS) == 1  # the refused one used no id


def test_too_many_channels_is_open_fail() -> None:
    client, hub = pair(max_channels=2)
    a = open_channel(client, hub, "a")
    open_channel(client, hub, "b")
    client.max_channels = 10  # a client with a higher limit than the hub
    third = client.open_channel("c", SETTINGS)
    c, h = pump(client, hub)
    assert h == []  # the hub never bothers its driver
    assert c == [ev.ChannelOpenFailed(third, ErrorCode.TOO_MANY_CHANNELS, "this hub allows 2 channels per connection")]
    client.close_channel(a)
    pump(client, hub)
    fourth = client.open_channel("d", SETTINGS)  # room again
    _, h = pump(client, hub)
    assert h == [ev.ChannelOpenRequested(fourth, "d", SETTINGS, ControlRequest())]


def test_client_limit_is_local_protocol_error() -> None:
    client = Connection(Role.CLIENT, max_channels=1)
    client.open_channel("a", SETTINGS)
    with pytest.raises(LocalProtocolError, match="at most 1 channels"):
        client.open_channel("b", SETTINGS)


@pytest.mark.parametrize("reused", [0, 1, 2])
def test_channel_id_reuse_is_an_error(reused: int) -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.close_channel(cid)
    open_channel(client, hub)  # id 2, open
    assert cid == 1
    expect_remote_error(hub, fr.Open(reused, "x", SETTINGS, ControlRequest(), 10), ErrorCode.PROTOCOL_ERROR, "not new")


def test_frames_for_unknown_channels_are_errors() -> None:
    client, hub = pair()
    expect_remote_error(hub, fr.Data(5, b"x"), ErrorCode.PROTOCOL_ERROR, "unknown channel 5")
    client, hub = pair()
    expect_remote_error(client, fr.OpenOk(5, SETTINGS, 10, {}), ErrorCode.PROTOCOL_ERROR, "unknown channel 5")


def test_frames_for_a_channel_in_the_wrong_state_are_errors() -> None:
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    pump(client, hub)
    expect_remote_error(hub, fr.Data(cid, b"x"), ErrorCode.PROTOCOL_ERROR, "pending")  # DATA before OPEN_OK
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    expect_remote_error(client, fr.Close(cid, 0, ""), ErrorCode.PROTOCOL_ERROR, "before OPEN_OK")
    client, hub = pair()
    cid = open_channel(client, hub)
    expect_remote_error(client, fr.OpenOk(cid, SETTINGS, 10, {}), ErrorCode.PROTOCOL_ERROR, "state open")
    client, hub = pair()
    cid = open_channel(client, hub)
    expect_remote_error(client, fr.OpenFail(cid, 1, ""), ErrorCode.PROTOCOL_ERROR, "state open")


def test_answering_a_channel_that_is_not_pending_is_local_error() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    with pytest.raises(LocalProtocolError, match="not pending"):
        hub.accept_channel(cid, SETTINGS)
    with pytest.raises(LocalProtocolError, match="not pending"):
        hub.reject_channel(cid, ErrorCode.PORT_BUSY, "")
    assert hub.accept_channel(99, SETTINGS) is False
    assert hub.reject_channel(99, ErrorCode.PORT_BUSY, "") is False


# --- data ------------------------------------------------------------------------------------------


def received(events: list[ev.Event], channel: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.DataReceived) and e.channel == channel)


def test_data_both_ways_with_every_byte_value() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    payload = ALL_BYTES * 4 + ALL_BYTES[::-1]
    client.send_data(cid, payload)
    hub.send_data(cid, memoryview(payload)[::1])
    c, h = pump(client, hub)
    assert received(h, cid) == payload
    assert received(c, cid) == payload


def test_channels_are_kept_apart() -> None:
    client, hub = pair()
    a, b = open_channel(client, hub, "a"), open_channel(client, hub, "b")
    client.send_data(a, b"to a")
    client.send_data(b, b"to b")
    client.send_data(a, b" again")
    _, h = pump(client, hub)
    assert h == [ev.DataReceived(a, b"to a"), ev.DataReceived(b, b"to b"), ev.DataReceived(a, b" again")]


def test_large_writes_are_split_into_max_chunks() -> None:
    client, hub = pair(window=1 << 20)
    cid = open_channel(client, hub)
    payload = ALL_BYTES * ((3 * MAX_DATA_CHUNK + 5) // 256 + 1)
    payload = payload[: 3 * MAX_DATA_CHUNK + 5]
    client.send_data(cid, payload)
    wire = client.data_to_send()
    frames = FrameDecoder().feed(wire)
    assert [len(f.data) for f in frames if isinstance(f, fr.Data)] == [MAX_DATA_CHUNK] * 3 + [5]
    # the receiver hands consecutive DATA of one channel on as one event: one port write, not four
    events = hub.receive_data(wire)
    assert [len(e.data) for e in events if isinstance(e, ev.DataReceived)] == [len(payload)]
    assert received(events, cid) == payload


def test_data_of_different_channels_and_other_frames_keep_their_order() -> None:
    client, hub = pair(window=1 << 20)
    a, b = open_channel(client, hub), open_channel(client, hub)
    client.send_data(a, b"1")
    client.send_data(a, b"2")
    client.send_data(b, b"3")
    client.request_purge(a, Purge.BOTH)
    client.send_data(a, b"4")
    client.send_data(a, b"5")
    events = hub.receive_data(client.data_to_send())
    assert events == [
        ev.DataReceived(a, b"12"),
        ev.DataReceived(b, b"3"),
        ev.PurgeRequested(a, Purge.BOTH),
        ev.DataReceived(a, b"45"),
    ]


def test_output_is_coalesced_into_one_write() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.send_data(cid, b"a")
    client.send_data(cid, b"b")
    client.ping(1)
    out = client.data_to_send()
    assert frames_in(out) == [fr.Data(cid, b"a"), fr.Data(cid, b"b"), fr.Ping(1)]
    assert client.data_to_send() == b""


# --- closing ---------------------------------------------------------------------------------------


def test_close_from_the_client() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.close_channel(cid)
    assert client.channel_state(cid) is ChannelState.CLOSING
    assert client.send_window(cid) == 0
    c, h = pump(client, hub)
    assert h == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=True)]
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=False)]
    assert client.channel_count == hub.channel_count == 0


def test_close_from_the_hub_with_a_reason() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    hub.close_channel(cid, ErrorCode.DEVICE_GONE, "the USB adapter was unplugged")
    c, h = pump(client, hub)
    assert c == [ev.ChannelClosed(cid, ErrorCode.DEVICE_GONE, "the USB adapter was unplugged", by_peer=True)]
    assert h == [ev.ChannelClosed(cid, ErrorCode.DEVICE_GONE, "the USB adapter was unplugged", by_peer=False)]
    assert client.channel_count == hub.channel_count == 0


def test_crossing_closes() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.close_channel(cid, ErrorCode.NORMAL, "user quit")
    hub.close_channel(cid, ErrorCode.DEVICE_GONE, "unplugged")
    c, h = pump(client, hub)
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "user quit", by_peer=False)]
    assert h == [ev.ChannelClosed(cid, ErrorCode.DEVICE_GONE, "unplugged", by_peer=False)]
    assert client.channel_count == hub.channel_count == 0
    assert client.data_to_send() == hub.data_to_send() == b""  # nobody answers a crossing CLOSE


def test_close_twice_is_harmless_and_unknown_close_is_a_no_op() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.close_channel(cid)
    client.close_channel(cid)
    client.close_channel(42)
    assert [type(f) for f in frames_in(client.data_to_send())] == [fr.Close]


def test_frames_arriving_after_our_close_are_dropped() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.send_data(cid, b"x" * 3000)
    pump(client, hub)
    hub.consume(cid, 3000)  # queues a WINDOW
    hub.send_data(cid, b"late data")
    hub.report_modem(cid, ModemLines.CTS)
    hub.report_settings(cid, SETTINGS)
    hub.report_control(cid, ControlState())
    hub.report_channel_error(cid, ErrorCode.NOT_SUPPORTED, "x")
    client.close_channel(cid)
    c, h = pump(client, hub)
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=False)]
    assert h == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=True)]


def test_commands_on_a_closing_channel() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.send_data(cid, b"abc")
    pump(client, hub)
    hub.close_channel(cid)
    with pytest.raises(LocalProtocolError, match="closing, not open"):
        hub.send_data(cid, b"x")
    hub.consume(cid, 3)  # ignored: credit for a closing channel means nothing
    hub.report_modem(cid, ModemLines.CTS)  # ignored: only for open channels
    assert [type(f) for f in frames_in(hub.data_to_send())] == [fr.Close]


def test_close_while_opening_reaches_a_pending_hub() -> None:
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    pump(client, hub)
    client.close_channel(cid)
    c, h = pump(client, hub)
    assert h == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=True)]
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=False)]
    assert hub.accept_channel(cid, SETTINGS) is False  # too late: the client gave up
    assert hub.reject_channel(cid, ErrorCode.PORT_BUSY, "") is False
    assert hub.channel_count == client.channel_count == 0


def test_close_while_opening_crossing_open_ok() -> None:
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    pump(client, hub)
    hub.accept_channel(cid, SETTINGS)
    hub.send_data(cid, b"hello")  # the hub already talks
    client.close_channel(cid)  # before the OPEN_OK arrives
    c, h = pump(client, hub)
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=False)]
    assert h == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=True)]
    assert hub.channel_count == client.channel_count == 0


def test_close_while_opening_crossing_open_fail() -> None:
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    pump(client, hub)
    hub.reject_channel(cid, ErrorCode.PORT_BUSY, "busy")
    client.close_channel(cid, ErrorCode.NORMAL, "gave up")
    c, h = pump(client, hub)  # the CLOSE reaches a hub that already forgot the channel: not an error
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "gave up", by_peer=False)]
    assert h == []
    assert hub.channel_count == client.channel_count == 0 and not hub.closed


def test_close_while_opening_crossing_too_many_channels() -> None:
    client, hub = pair(max_channels=1)
    open_channel(client, hub)
    client.max_channels = 5
    cid = client.open_channel("p", SETTINGS)
    hub.receive_data(client.data_to_send())
    client.close_channel(cid)
    c, h = pump(client, hub)
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=False)]
    assert h == [] and not hub.closed


def test_a_stray_close_for_a_never_opened_id_is_still_an_error() -> None:
    client, hub = pair()
    open_channel(client, hub)
    expect_remote_error(hub, fr.Close(7, 0, ""), ErrorCode.PROTOCOL_ERROR, "unknown channel 7")


def test_the_hub_may_not_close_a_pending_channel() -> None:
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    pump(client, hub)
    with pytest.raises(LocalProtocolError, match="reject_channel"):
        hub.close_channel(cid)


# --- per-channel control, status and direction --------------------------------------------------------


def test_client_requests_reach_the_hub() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.request_settings(cid, PortSettings(57600, 7, Parity.ODD))
    client.request_control(cid, ControlRequest(dtr=True, break_=False))
    client.request_purge(cid, Purge.RECEIVE)
    client.report_channel_error(cid, ErrorCode.NOT_SUPPORTED, "client-side trouble")
    c, h = pump(client, hub)
    assert c == []
    assert h == [
        ev.SettingsRequested(cid, PortSettings(57600, 7, Parity.ODD)),
        ev.ControlRequested(cid, ControlRequest(dtr=True, break_=False)),
        ev.PurgeRequested(cid, Purge.RECEIVE),
        ev.ChannelErrorReceived(cid, ErrorCode.NOT_SUPPORTED, "client-side trouble"),
    ]


def test_hub_reports_reach_the_client() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    hub.report_settings(cid, PortSettings(57600))
    hub.report_control(cid, ControlState(dtr=True, rts=False, break_=True))
    hub.report_modem(cid, ModemLines.DSR | ModemLines.CD)
    hub.report_channel_error(cid, ErrorCode.NOT_SUPPORTED, "a PTY has no DTR line")
    hub.announce_ports([{"name": "gps", "state": "free"}])
    c, h = pump(client, hub)
    assert h == []
    assert c == [
        ev.SettingsChanged(cid, PortSettings(57600)),
        ev.ControlChanged(cid, ControlState(dtr=True, rts=False, break_=True)),
        ev.ModemChanged(cid, ModemLines.DSR | ModemLines.CD),
        ev.ChannelErrorReceived(cid, ErrorCode.NOT_SUPPORTED, "a PTY has no DTR line"),
        ev.PortsUpdated([{"name": "gps", "state": "free"}]),
    ]


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("open_channel", ("p", SETTINGS)),
        ("request_settings", (1, SETTINGS)),
        ("request_control", (1, ControlRequest(dtr=True))),
        ("request_purge", (1, Purge.BOTH)),
    ],
)
def test_client_only_commands_refused_on_the_hub(call: str, args: tuple[Any, ...]) -> None:
    client, hub = pair()
    open_channel(client, hub)
    with pytest.raises(LocalProtocolError, match="only the client"):
        getattr(hub, call)(*args)
    assert hub.data_to_send() == b""


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("report_settings", (1, SETTINGS)),
        ("report_control", (1, ControlState())),
        ("report_modem", (1, ModemLines.CTS)),
        ("announce_ports", ([],)),
    ],
)
def test_hub_only_commands_refused_on_the_client(call: str, args: tuple[Any, ...]) -> None:
    client, hub = pair()
    open_channel(client, hub)
    with pytest.raises(LocalProtocolError, match="only the hub"):
        getattr(client, call)(*args)
    assert client.data_to_send() == b""


def test_requests_on_a_channel_that_is_not_open_are_local_errors() -> None:
    client, hub = pair()
    cid = client.open_channel("p", SETTINGS)
    calls: list[Callable[[], None]] = [
        lambda: client.request_settings(cid, SETTINGS),
        lambda: client.request_control(cid, ControlRequest()),
        lambda: client.request_purge(cid, Purge.BOTH),
        lambda: client.send_data(99, b"x"),
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()


FROM_HUB_ONLY = [
    fr.OpenOk(1, SETTINGS, 10, {}),
    fr.OpenFail(1, 1, ""),
    fr.Settings(1, SETTINGS),
    fr.Control(1, ControlState()),
    fr.Modem(1, ModemLines.CTS),
    fr.Ports([]),
]
FROM_CLIENT_ONLY = [
    fr.Open(9, "p", SETTINGS, ControlRequest(), 10),
    fr.SetSettings(1, SETTINGS),
    fr.SetControl(1, ControlRequest()),
    fr.PurgeRequest(1, Purge.BOTH),
]


@pytest.mark.parametrize("frame", FROM_HUB_ONLY, ids=lambda f: f.TYPE.name)
def test_hub_frames_from_a_client_are_refused(frame: fr.Frame) -> None:
    client, hub = pair()
    open_channel(client, hub)
    expect_remote_error(hub, frame, ErrorCode.PROTOCOL_ERROR, "not allowed from the client")


@pytest.mark.parametrize("frame", FROM_CLIENT_ONLY, ids=lambda f: f.TYPE.name)
def test_client_frames_from_a_hub_are_refused(frame: fr.Frame) -> None:
    client, hub = pair()
    open_channel(client, hub)
    expect_remote_error(client, frame, ErrorCode.PROTOCOL_ERROR, "not allowed from the hub")


# --- keepalive and goaway -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [0, 42, 2**64 - 1])
def test_ping_is_answered_automatically(token: int) -> None:
    client, hub = pair()
    client.ping(token)
    hub.ping(token ^ 1)
    c, h = pump(client, hub)
    assert c == [ev.PongReceived(token)]
    assert h == [ev.PongReceived(token ^ 1)]


def test_goaway_tells_the_peer_and_stops_both() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    hub.goaway(ErrorCode.NORMAL, "hub shutting down")
    hub.goaway(ErrorCode.INTERNAL_ERROR, "second")  # only the first is sent
    out = hub.data_to_send()
    assert frames_in(out) == [fr.GoAway(ErrorCode.NORMAL, "hub shutting down")]
    client.send_data(cid, b"x")
    assert hub.receive_data(client.data_to_send()) == []  # we said goodbye: input is ignored
    assert client.receive_data(out + encode_frame(fr.Ping(1))) == [
        ev.ConnectionTerminated(ErrorCode.NORMAL, "hub shutting down")
    ]
    assert client.closed
    assert client.data_to_send() == b""  # the PING after GOAWAY was not answered


# --- robustness ---------------------------------------------------------------------------------------

peer_frame_st = st.one_of(
    st.builds(fr.Data, st.integers(0, 3), st.binary(max_size=2000)),
    st.builds(fr.WindowUpdate, st.integers(0, 3), st.integers(0, 1 << 30)),
    st.builds(fr.Close, st.integers(0, 3), st.sampled_from(list(ErrorCode)), st.text(max_size=10)),
    st.builds(
        fr.Open,
        st.integers(0, 4),
        st.text(max_size=5),
        st.just(SETTINGS),
        st.just(ControlRequest()),
        st.integers(0, 1 << 30),
    ),
    st.builds(fr.OpenOk, st.integers(0, 3), st.just(SETTINGS), st.integers(0, 100), st.just({})),
    st.builds(fr.OpenFail, st.integers(0, 3), st.integers(0, 20), st.text(max_size=10)),
    st.builds(fr.SetSettings, st.integers(0, 3), st.just(SETTINGS)),
    st.builds(fr.SetControl, st.integers(0, 3), st.just(ControlRequest(dtr=True))),
    st.builds(fr.Modem, st.integers(0, 3), st.just(ModemLines.CTS)),
    st.builds(fr.PurgeRequest, st.integers(0, 3), st.sampled_from(list(Purge))),
    st.builds(fr.ChannelError, st.integers(0, 3), st.integers(0, 20), st.text(max_size=10)),
    st.builds(fr.Ping, st.integers(0, 2**64 - 1)),
    st.builds(fr.Pong, st.integers(0, 2**64 - 1)),
    st.builds(fr.Hello, st.integers(0, 2), st.just({})),
    st.builds(fr.GoAway, st.integers(0, 20), st.text(max_size=10)),
    st.builds(fr.Ports, st.just([{"name": "x"}])),
)


@pytest.mark.parametrize("role", [Role.HUB, Role.CLIENT])
@given(frames=st.lists(peer_frame_st, max_size=12), garbage=st.binary(max_size=64))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_frames_from_the_peer_give_events_or_remote_protocol_error(
    role: Role, frames: list[fr.Frame], garbage: bytes
) -> None:
    client, hub = pair(window=1000)
    open_channel(client, hub)
    open_channel(client, hub)
    target = hub if role is Role.HUB else client
    target.data_to_send()
    try:
        target.receive_data(b"".join(encode_frame(f) for f in frames) + garbage)
    except RemoteProtocolError as exc:
        assert target.closed
        assert frames_in(target.data_to_send())[-1] == fr.GoAway(exc.code, str(exc))
    for f in frames_in(target.data_to_send()):  # whatever it answered is valid wire format
        assert isinstance(f, fr.Frame)


@given(st.binary(max_size=3000))
@settings(max_examples=150, deadline=None)
def test_garbage_after_handshake_only_raises_remote_protocol_error(garbage: bytes) -> None:
    client, hub = pair()
    open_channel(client, hub)
    try:
        hub.receive_data(garbage)
    except RemoteProtocolError:
        assert hub.closed


def test_oversized_frame_from_the_peer_is_frame_too_large() -> None:
    client = Connection(Role.CLIENT, max_frame=1000)
    hub = Connection(Role.HUB)
    pump(client, hub)
    expect_remote_error(client, b"\x00\x00\x03\xe9", ErrorCode.FRAME_TOO_LARGE, "exceeds the limit of 1000")


# --- stateful: two connections, random operations, random delivery ---------------------------------------

CLIENT_WINDOW = 700
HUB_WINDOW = 500


class TunnelMachine(RuleBasedStateMachine):
    """Random opens, answers, writes, reads, closes and partial deliveries on a client/hub pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = {
            Role.CLIENT: Connection(Role.CLIENT, window=CLIENT_WINDOW, max_channels=5),
            Role.HUB: Connection(Role.HUB, window=HUB_WINDOW, max_channels=3),
        }
        self.window = {Role.CLIENT: CLIENT_WINDOW, Role.HUB: HUB_WINDOW}
        self.wire: dict[Role, bytearray] = {Role.CLIENT: bytearray(), Role.HUB: bytearray()}  # sent by the key
        self.sent: dict[tuple[Role, int], bytearray] = {}
        self.got: dict[tuple[Role, int], bytearray] = {}
        self.held: dict[tuple[Role, int], int] = {}
        self.consumed: dict[tuple[Role, int], int] = {}
        self.pending: set[int] = set()
        self.pings: dict[Role, list[int]] = {Role.CLIENT: [], Role.HUB: []}
        self.pongs: dict[Role, list[int]] = {Role.CLIENT: [], Role.HUB: []}
        self.requests: dict[int, int] = {}  # per channel: sent by the client
        self.requested: dict[int, int] = {}  # per channel: seen by the hub
        self.collect()

    @staticmethod
    def other(side: Role) -> Role:
        return Role.HUB if side is Role.CLIENT else Role.CLIENT

    def collect(self) -> None:
        for side, conn in self.conn.items():
            self.wire[side] += conn.data_to_send()

    def open_ids(self, side: Role) -> list[int]:
        conn = self.conn[side]
        return sorted(cid for cid in range(1, 64) if conn.channel_state(cid) is ChannelState.OPEN)

    def deliver_from(self, side: Role, size: int) -> None:
        receiver = self.other(side)
        chunk = bytes(self.wire[side][:size])
        del self.wire[side][:size]
        for event in self.conn[receiver].receive_data(chunk):
            self.note(receiver, event)
        self.collect()

    def note(self, side: Role, event: ev.Event) -> None:
        match event:
            case ev.ChannelOpenRequested(channel):
                self.pending.add(channel)
            case ev.ChannelClosed(channel) if side is Role.HUB:
                self.pending.discard(channel)
            case ev.DataReceived(channel, data):
                key = (side, channel)
                self.got.setdefault(key, bytearray()).extend(data)
                self.held[key] = self.held.get(key, 0) + len(data)
            case ev.WindowOpened(channel, available):
                assert 0 < available <= self.window[self.other(side)]
            case ev.PongReceived(token):
                self.pongs[side].append(token)
            case ev.SettingsRequested(channel) | ev.ControlRequested(channel) | ev.PurgeRequested(channel):
                self.requested[channel] = self.requested.get(channel, 0) + 1

    # --- rules ---

    @rule(port=st.sampled_from(["a", "b", "c"]))
    def open(self, port: str) -> None:
        client = self.conn[Role.CLIENT]
        if client.channel_count < client.max_channels:
            client.open_channel(port, SETTINGS)
        self.collect()

    @rule(data=st.data(), accept=st.booleans())
    def answer(self, data: st.DataObject, accept: bool) -> None:
        if not self.pending:
            return
        cid = data.draw(st.sampled_from(sorted(self.pending)))
        self.pending.discard(cid)
        hub = self.conn[Role.HUB]
        if accept:
            hub.accept_channel(cid, SETTINGS)
        else:
            hub.reject_channel(cid, ErrorCode.PORT_BUSY, "busy")
        self.collect()

    @rule(side=st.sampled_from(list(Role)), data=st.data())
    def send(self, side: Role, data: st.DataObject) -> None:
        conn = self.conn[side]
        ids = [cid for cid in self.open_ids(side) if conn.send_window(cid)]
        if not ids:
            return
        cid = data.draw(st.sampled_from(ids))
        payload = data.draw(st.binary(min_size=1, max_size=conn.send_window(cid)))
        conn.send_data(cid, payload)
        self.sent.setdefault((side, cid), bytearray()).extend(payload)
        self.collect()

    @rule(side=st.sampled_from(list(Role)), data=st.data())
    def overrun(self, side: Role, data: st.DataObject) -> None:
        conn = self.conn[side]
        ids = self.open_ids(side)
        if not ids:
            return
        cid = data.draw(st.sampled_from(ids))
        with pytest.raises(LocalProtocolError):
            conn.send_data(cid, bytes(conn.send_window(cid) + 1))

    @rule(side=st.sampled_from(list(Role)), data=st.data())
    def consume(self, side: Role, data: st.DataObject) -> None:
        keys = [key for key, held in self.held.items() if key[0] is side and held]
        if not keys:
            return
        key = data.draw(st.sampled_from(sorted(keys, key=lambda k: k[1])))
        amount = data.draw(st.integers(1, self.held[key]))
        self.conn[side].consume(key[1], amount)
        self.held[key] -= amount
        if self.conn[side].channel_state(key[1]) is ChannelState.OPEN:
            self.consumed[key] = self.consumed.get(key, 0) + amount
        self.collect()

    @rule(side=st.sampled_from(list(Role)), data=st.data())
    def close(self, side: Role, data: st.DataObject) -> None:
        conn = self.conn[side]
        states = (ChannelState.OPEN, ChannelState.OPENING)
        ids = [cid for cid in range(1, 64) if conn.channel_state(cid) in states]
        if ids:
            conn.close_channel(data.draw(st.sampled_from(ids)), ErrorCode.NORMAL, "done")
        self.collect()

    @rule(data=st.data())
    def control(self, data: st.DataObject) -> None:
        client, hub = self.conn[Role.CLIENT], self.conn[Role.HUB]
        if ids := self.open_ids(Role.CLIENT):
            cid = data.draw(st.sampled_from(ids))
            client.request_control(cid, ControlRequest(dtr=data.draw(st.booleans())))
            client.request_purge(cid, Purge.BOTH)
            self.requests[cid] = self.requests.get(cid, 0) + 2
        if ids := self.open_ids(Role.HUB):
            hub.report_modem(data.draw(st.sampled_from(ids)), ModemLines.CTS)
        self.collect()

    @rule(side=st.sampled_from(list(Role)), token=st.integers(0, 2**64 - 1))
    def ping(self, side: Role, token: int) -> None:
        self.conn[side].ping(token)
        self.pings[side].append(token)
        self.collect()

    @rule(side=st.sampled_from(list(Role)), size=st.integers(1, 3000))
    def deliver(self, side: Role, size: int) -> None:
        self.deliver_from(side, size)

    @rule()
    def drain(self) -> None:
        """Deliver everything and let every consumer take everything: the quiet state must be exact."""
        for _ in range(100):
            for side in Role:
                self.deliver_from(side, len(self.wire[side]))
            for key, held in list(self.held.items()):
                if held:
                    self.conn[key[0]].consume(key[1], held)
                    if self.conn[key[0]].channel_state(key[1]) is ChannelState.OPEN:
                        self.consumed[key] = self.consumed.get(key, 0) + held
                    self.held[key] = 0
            self.collect()
            if not any(self.wire.values()):
                break
        for side in Role:
            conn, peer = self.conn[side], self.conn[self.other(side)]
            for cid in self.open_ids(side):
                if peer.channel_state(cid) is not ChannelState.OPEN:
                    continue
                assert self.got.get((self.other(side), cid), b"") == self.sent.get((side, cid), b"")
                # every byte taken by the consumer, so under half a window is still withheld
                assert conn.send_window(cid) * 2 > self.window[self.other(side)]
        assert self.pongs == self.pings  # every ping answered, in order
        for cid in self.open_ids(Role.HUB):  # a channel the hub closed drops what crossed its CLOSE
            assert self.requested.get(cid, 0) == self.requests.get(cid, 0)

    # --- invariants ---

    @invariant()
    def bytes_arrive_in_order_and_intact(self) -> None:
        for (side, cid), got in self.got.items():
            sent = self.sent.get((self.other(side), cid), bytearray())
            assert sent[: len(got)] == got

    @invariant()
    def never_more_than_a_window_in_flight(self) -> None:
        for side in Role:
            receiver = self.other(side)
            for (sender, cid), sent in self.sent.items():
                if sender is side:
                    unconsumed = len(sent) - self.consumed.get((receiver, cid), 0)
                    assert unconsumed <= self.window[receiver]
            for cid in self.open_ids(side):
                assert 0 <= self.conn[side].send_window(cid) <= self.window[receiver]

    @invariant()
    def connections_alive(self) -> None:
        assert not self.conn[Role.CLIENT].closed and not self.conn[Role.HUB].closed
        assert self.conn[Role.HUB].channel_count <= 3


TunnelMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_tunnel_state_machine = TunnelMachine.TestCase


# --- throughput -----------------------------------------------------------------------------------------


def transfer(payload_size: int, total: int) -> float:
    """Push ``total`` bytes client->hub in ``payload_size`` writes through both Connections; return seconds."""
    client, hub = pair(window=1 << 22)
    cid = open_channel(client, hub)
    payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    sent = got = 0
    start = time.perf_counter()
    while got < total:
        while sent < total and client.send_window(cid) >= payload_size:
            client.send_data(cid, payload)
            sent += payload_size
        for event in hub.receive_data(client.data_to_send()):
            if isinstance(event, ev.DataReceived):
                got += len(event.data)
                hub.consume(cid, len(event.data))
        client.receive_data(hub.data_to_send())
    elapsed = time.perf_counter() - start
    assert got == sent == total
    return elapsed


@pytest.mark.parametrize("payload_size", [16 * 1024, 64 * 1024])
def test_data_throughput(payload_size: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Encode + decode of DATA through two Connections is far from the bottleneck (TLS is)."""
    total = 64 << 20
    elapsed = transfer(payload_size, total)
    rate = total / elapsed / 1e6
    with capsys.disabled():
        print(f"\n  DATA {payload_size // 1024} KiB payloads: {rate:.0f} MB/s through two Connections")
    assert rate > 50  # measured several hundred MB/s; this only catches a per-byte loop


def test_small_frame_rate(capsys: pytest.CaptureFixture[str]) -> None:
    frames = 50_000
    elapsed = transfer(1, frames)
    rate = frames / elapsed
    with capsys.disabled():
        print(f"\n  DATA 1-byte payloads: {rate:,.0f} frames/s through two Connections")
    assert rate > 5_000
