"""The tunnel protocol core: frames, framing, windows and the multiplexer, with no I/O at all."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.protocol import events as ev
from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import FrameDecoder, encode_frame
from comtunnel.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from comtunnel.protocol.limits import MAX_DATA_CHUNK
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import (
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    Purge,
    SettingsError,
    StopBits,
    parse_line_settings,
)

settings_st = st.builds(
    PortSettings,
    baudrate=st.integers(1, 100_000_000),
    bytesize=st.sampled_from([5, 6, 7, 8]),
    parity=st.sampled_from(list(Parity)),
    stopbits=st.sampled_from(list(StopBits)),
    xonxoff=st.booleans(),
    rtscts=st.booleans(),
)
opt_bool = st.none() | st.booleans()
channel_st = st.integers(0, 2**32 - 1)
text_st = st.text(max_size=200)
code_st = st.sampled_from(list(ErrorCode))
frame_st = st.one_of(
    st.builds(
        fr.Hello, st.integers(0, 10), st.dictionaries(st.text(max_size=8), st.integers(-(2**31), 2**31), max_size=3)
    ),
    st.builds(
        fr.Open,
        channel_st,
        st.text(max_size=50),
        settings_st,
        st.builds(ControlRequest, opt_bool, opt_bool, opt_bool),
        st.integers(0, 1 << 30),
    ),
    st.builds(fr.OpenOk, channel_st, settings_st, st.integers(0, 1 << 30), st.just({"device": "x"})),
    st.builds(fr.OpenFail, channel_st, code_st, text_st),
    st.builds(fr.Close, channel_st, code_st, text_st),
    st.builds(fr.Data, channel_st, st.binary(max_size=70_000)),
    st.builds(fr.WindowUpdate, channel_st, st.integers(0, 1 << 30)),
    st.builds(fr.SetSettings, channel_st, settings_st),
    st.builds(fr.Settings, channel_st, settings_st),
    st.builds(fr.SetControl, channel_st, st.builds(ControlRequest, opt_bool, opt_bool, opt_bool)),
    st.builds(fr.Control, channel_st, st.builds(ControlState, st.booleans(), st.booleans(), st.booleans())),
    st.builds(fr.Modem, channel_st, st.sampled_from([ModemLines(v) for v in range(0, 256, 16)])),
    st.builds(fr.PurgeRequest, channel_st, st.sampled_from(list(Purge))),
    st.builds(fr.ChannelError, channel_st, code_st, text_st),
    st.builds(fr.Ping, st.integers(0, 2**64 - 1)),
    st.builds(fr.Pong, st.integers(0, 2**64 - 1)),
    st.builds(fr.GoAway, code_st, text_st),
    st.builds(fr.Ports, st.lists(st.builds(lambda n: {"name": n}, st.text(max_size=10)), max_size=4)),
)


# --- frames and framing -----------------------------------------------------------------------------


@given(st.lists(frame_st, min_size=1, max_size=6), st.data())
@settings(max_examples=150, deadline=None)
def test_any_split_of_a_frame_stream_decodes_to_the_same_frames(frames: list[fr.Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    out: list[fr.Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == frames
    assert decoder.buffered == 0


def test_byte_by_byte_feeding() -> None:
    frames = [fr.Data(3, bytes(range(256))), fr.Ping(7), fr.Close(3, ErrorCode.PORT_BUSY, "busy")]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out = [f for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])]
    assert out == frames


@given(st.integers(0, 2**32 - 1), st.integers(0, 200_000))
def test_data_frame_header_is_the_msgpack_encoding(channel: int, size: int) -> None:
    payload = b"\xaa" * size
    assert fr.data_frame_header(channel, size) + payload == encode_frame(fr.Data(channel, payload))


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_garbage_raises_only_our_protocol_error(garbage: bytes) -> None:
    decoder = FrameDecoder(max_frame=4096)
    with contextlib.suppress(RemoteProtocolError):
        decoder.feed(garbage)
    assert decoder.buffered <= 4096 + 4


def test_oversized_length_is_rejected_as_soon_as_the_header_arrives() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed((1 << 31).to_bytes(4, "big"))
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    "body",
    [
        [99, 1],  # unknown type
        [5, 1],  # DATA too short
        [5, 1, b"x", 3],  # DATA with an extra field
        [5, -1, b"x"],  # negative channel
        [5, 1, "text"],  # DATA payload not binary
        [6, 1, -5],  # negative window
        [
            1,
            1,
            "p",
            {"baud": 0, "bits": 8, "parity": "N", "stop": "1", "xonxoff": False, "rtscts": False},
            {},
            10,
        ],  # baud 0
        [
            1,
            1,
            "p",
            {"baud": 9600, "bits": 9, "parity": "N", "stop": "1", "xonxoff": False, "rtscts": False},
            {},
            10,
        ],  # 9 data bits
        [9, 1, {"dtr": "yes"}],  # control value not a bool
        [9, 1, {"dsr": True}],  # unknown control line
        [12, 1, 0],  # purge 0 is reserved
        {"not": "an array"},
    ],
)
def test_malformed_bodies(body: object) -> None:
    import msgpack

    raw = msgpack.packb(body, use_bin_type=True)
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(len(raw).to_bytes(4, "big") + raw)


def test_line_settings_strings() -> None:
    assert parse_line_settings("4800,7E1") == PortSettings(4800, 7, Parity.EVEN, StopBits.ONE)
    assert parse_line_settings("250000,8N1.5,rtscts").stopbits is StopBits.ONE_POINT_FIVE
    assert parse_line_settings("115200,8N1,xonxoff").xonxoff
    assert parse_line_settings("9600,8O2").short() == "9600,8O2"
    for bad in ("fast", "9600,9N1", "0", "9600,8X1"):
        with pytest.raises(SettingsError):
            parse_line_settings(bad)


# --- the multiplexer ---------------------------------------------------------------------------------


def pump(a: Connection, b: Connection) -> tuple[list[ev.Event], list[ev.Event]]:
    """Exchange bytes until both are quiet; return the events each side saw."""
    seen_a: list[ev.Event] = []
    seen_b: list[ev.Event] = []
    for _ in range(100):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return seen_a, seen_b
        seen_b += b.receive_data(out_a)
        seen_a += a.receive_data(out_b)
    raise AssertionError("connections never went quiet")


def pair(window: int = 1024, max_channels: int = 8) -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT, window=window)
    hub = Connection(Role.HUB, window=window, max_channels=max_channels)
    c_events, h_events = pump(client, hub)
    assert isinstance(c_events[0], ev.HandshakeComplete) and isinstance(h_events[0], ev.HandshakeComplete)
    return client, hub


def opened(client: Connection, hub: Connection, port: str = "p") -> int:
    cid = client.open_channel(port, PortSettings(115200))
    _, h = pump(client, hub)
    assert h == [ev.ChannelOpenRequested(cid, port, PortSettings(115200), ControlRequest())]
    hub.accept_channel(cid, PortSettings(115200))
    c, _ = pump(client, hub)
    assert c == [ev.ChannelOpened(cid, PortSettings(115200), {})]
    return cid


def test_open_data_both_ways_and_close() -> None:
    client, hub = pair()
    cid = opened(client, hub)
    client.send_data(cid, bytes(range(256)))
    hub.send_data(cid, b"\xff\x00\x11\x13\r\n")
    c, h = pump(client, hub)
    assert ev.DataReceived(cid, bytes(range(256))) in h
    assert ev.DataReceived(cid, b"\xff\x00\x11\x13\r\n") in c
    client.close_channel(cid)
    c, h = pump(client, hub)
    assert h == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=True)]
    assert c == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=False)]
    assert client.channel_count == hub.channel_count == 0


def test_reject_carries_code_and_message() -> None:
    client, hub = pair()
    cid = client.open_channel("gps", PortSettings())
    pump(client, hub)
    hub.reject_channel(cid, ErrorCode.PORT_BUSY, "port 'gps' is in use by bob")
    c, _ = pump(client, hub)
    assert c == [ev.ChannelOpenFailed(cid, ErrorCode.PORT_BUSY, "port 'gps' is in use by bob")]


def test_windows_stop_a_sender_and_return_credit_after_consumption() -> None:
    client, hub = pair(window=1000)
    cid = opened(client, hub)
    assert client.send_window(cid) == 1000
    client.send_data(cid, b"x" * 1000)
    with pytest.raises(LocalProtocolError):
        client.send_data(cid, b"y")
    _, h = pump(client, hub)
    assert sum(len(e.data) for e in h if isinstance(e, ev.DataReceived)) == 1000
    hub.consume(cid, 400)  # less than half: no update yet
    c, _ = pump(client, hub)
    assert c == [] and client.send_window(cid) == 0
    hub.consume(cid, 600)
    c, _ = pump(client, hub)
    assert c == [ev.WindowOpened(cid, 1000)]


def test_a_stalled_channel_does_not_block_another() -> None:
    client, hub = pair(window=1000)
    stalled, busy = opened(client, hub, "a"), opened(client, hub, "b")
    client.send_data(stalled, b"s" * 1000)  # the hub never consumes these
    total = 0
    for _ in range(20):
        client.send_data(busy, b"b" * client.send_window(busy))
        _, h = pump(client, hub)
        for e in h:
            if isinstance(e, ev.DataReceived) and e.channel == busy:
                total += len(e.data)
                hub.consume(busy, len(e.data))
        pump(client, hub)
    assert total >= 19_000 and client.send_window(stalled) == 0


def test_large_writes_are_split_into_chunks() -> None:
    client, hub = pair(window=1 << 20)
    cid = opened(client, hub)
    client.send_data(cid, b"z" * (3 * MAX_DATA_CHUNK + 5))
    _, h = pump(client, hub)
    sizes = [len(e.data) for e in h if isinstance(e, ev.DataReceived)]
    assert sizes == [MAX_DATA_CHUNK] * 3 + [5]


def test_peer_exceeding_the_window_is_a_flow_control_error() -> None:
    client, hub = pair(window=100)
    cid = opened(client, hub)
    rogue = encode_frame(fr.Data(cid, b"x" * 101))
    with pytest.raises(RemoteProtocolError) as info:
        hub.receive_data(rogue)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    assert isinstance(FrameDecoder().feed(hub.data_to_send())[-1], fr.GoAway)


def test_control_settings_modem_purge_flow_in_their_directions() -> None:
    client, hub = pair()
    cid = opened(client, hub)
    client.request_settings(cid, PortSettings(57600, stopbits=StopBits.TWO))
    client.request_control(cid, ControlRequest(dtr=True))
    client.request_purge(cid, Purge.BOTH)
    _, h = pump(client, hub)
    assert h == [
        ev.SettingsRequested(cid, PortSettings(57600, stopbits=StopBits.TWO)),
        ev.ControlRequested(cid, ControlRequest(dtr=True)),
        ev.PurgeRequested(cid, Purge.BOTH),
    ]
    hub.report_settings(cid, PortSettings(57600))
    hub.report_control(cid, ControlState(dtr=True))
    hub.report_modem(cid, ModemLines.DSR | ModemLines.CTS)
    hub.report_problem(cid, ErrorCode.NOT_SUPPORTED, "no DTR line")
    c, _ = pump(client, hub)
    assert c == [
        ev.SettingsChanged(cid, PortSettings(57600)),
        ev.ControlChanged(cid, ControlState(dtr=True)),
        ev.ModemChanged(cid, ModemLines.DSR | ModemLines.CTS),
        ev.ChannelProblem(cid, ErrorCode.NOT_SUPPORTED, "no DTR line"),
    ]
    with pytest.raises(LocalProtocolError):
        hub.request_settings(cid, PortSettings())
    with pytest.raises(RemoteProtocolError):  # a client may not report modem lines
        hub.receive_data(encode_frame(fr.Modem(cid, ModemLines.CTS)))


def test_crossing_closes_and_data_after_our_close_are_fine() -> None:
    client, hub = pair()
    cid = opened(client, hub)
    hub.send_data(cid, b"late")
    client.close_channel(cid)
    hub.close_channel(cid, ErrorCode.DEVICE_GONE, "unplugged")
    c, h = pump(client, hub)
    assert not any(isinstance(e, ev.DataReceived) for e in c)
    assert client.channel_count == hub.channel_count == 0


def test_close_while_opening_then_hub_answers() -> None:
    client, hub = pair()
    cid = client.open_channel("p", PortSettings())
    pump(client, hub)
    client.close_channel(cid)
    _, h = pump(client, hub)
    assert h == [ev.ChannelClosed(cid, ErrorCode.NORMAL, "", by_peer=True)]
    assert hub.accept_channel(cid, PortSettings()) is False  # too late: the client gave up


def test_too_many_channels_and_reused_ids() -> None:
    client, hub = pair(max_channels=2)
    opened(client, hub, "a")
    opened(client, hub, "b")
    client.max_channels = 10
    cid = client.open_channel("c", PortSettings())
    c, _ = pump(client, hub)
    assert c == [ev.ChannelOpenFailed(cid, ErrorCode.TOO_MANY_CHANNELS, "this hub allows 2 channels per connection")]
    with pytest.raises(RemoteProtocolError, match="not new"):
        hub.receive_data(encode_frame(fr.Open(1, "x", PortSettings(), ControlRequest(), 10)))


def test_version_mismatch_and_frames_before_hello() -> None:
    hub = Connection(Role.HUB)
    with pytest.raises(RemoteProtocolError) as info:
        hub.receive_data(encode_frame(fr.Hello(2, {})))
    assert info.value.code == ErrorCode.VERSION_MISMATCH
    goaway = FrameDecoder().feed(hub.data_to_send())[-1]
    assert isinstance(goaway, fr.GoAway) and "version 2" in goaway.message
    with pytest.raises(RemoteProtocolError, match="expected HELLO"):
        Connection(Role.HUB).receive_data(encode_frame(fr.Ping(1)))


def test_ping_is_answered() -> None:
    client, hub = pair()
    client.ping(42)
    c, _ = pump(client, hub)
    assert c == [ev.PongReceived(42)]


@given(st.binary(max_size=3000))
@settings(max_examples=200)
def test_garbage_after_handshake_never_raises_anything_else(garbage: bytes) -> None:
    client, hub = pair()
    opened(client, hub)
    try:
        hub.receive_data(garbage)
    except RemoteProtocolError:
        assert hub.closed
