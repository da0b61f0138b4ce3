"""Frame bodies: every frame type round-trips, and a body that is not exactly right is a RemoteProtocolError.

The strategies here (one per frame type, exported as ``frame_st``) cover the whole value range each
field allows on the wire, so "encode then decode is the identity" is checked at the edges too.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import data_frame_header, decode_body, encode_body, encode_frame
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.limits import MAX_MESSAGE, MAX_PORT_NAME, MAX_WINDOW
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, Parity, PortSettings, Purge, StopBits

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

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
request_st = st.builds(ControlRequest, opt_bool, opt_bool, opt_bool)
state_st = st.builds(ControlState, st.booleans(), st.booleans(), st.booleans())
channel_st = st.integers(0, U32)
message_st = st.text(max_size=MAX_MESSAGE)
code_st = st.integers(0, 0xFFFF).map(ErrorCode.coerce)  # unknown codes stay plain ints
window_st = st.integers(0, MAX_WINDOW)
# Values msgpack gives back unchanged (lists, not tuples; no NaN, which is never equal to itself).
wire_value_st = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), U64)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)
info_st = st.dictionaries(st.text(max_size=12), wire_value_st, max_size=4)
port_entry_st = st.builds(lambda name, extra: {**extra, "name": name}, st.text(max_size=MAX_PORT_NAME), info_st)

offsets_st = st.tuples(channel_st, st.integers(0, U64 - 1), st.integers(0, U64 - 1)).map(
    lambda t: (t[0], max(t[1], t[2]), min(t[1], t[2]))
)

STRATEGIES: dict[fr.FrameType, st.SearchStrategy[Any]] = {
    fr.FrameType.HELLO: st.builds(fr.Hello, st.integers(0, U32), info_st),
    fr.FrameType.OPEN: st.builds(
        fr.Open, channel_st, st.text(max_size=MAX_PORT_NAME), settings_st, request_st, window_st
    ),
    fr.FrameType.OPEN_OK: st.builds(fr.OpenOk, channel_st, settings_st, window_st, info_st),
    fr.FrameType.OPEN_FAIL: st.builds(fr.OpenFail, channel_st, code_st, message_st),
    fr.FrameType.CLOSE: st.builds(fr.Close, channel_st, code_st, message_st),
    fr.FrameType.DATA: st.builds(fr.Data, channel_st, st.binary(max_size=70_000)),
    fr.FrameType.WINDOW: st.builds(fr.WindowUpdate, channel_st, window_st, st.none() | window_st),
    fr.FrameType.SET_SETTINGS: st.builds(
        fr.SetSettings, channel_st, settings_st, st.integers(0, U64), st.integers(0, U64)
    ),
    fr.FrameType.SETTINGS: st.builds(fr.Settings, channel_st, settings_st),
    fr.FrameType.SET_CONTROL: st.builds(
        fr.SetControl, channel_st, request_st, st.integers(0, U64), st.integers(0, U64)
    ),
    fr.FrameType.CONTROL: st.builds(fr.Control, channel_st, state_st),
    fr.FrameType.MODEM: st.builds(fr.Modem, channel_st, st.integers(0, 15).map(lambda n: ModemLines(n << 4))),
    fr.FrameType.PURGE: st.builds(
        fr.PurgeRequest, channel_st, st.sampled_from(list(Purge)), st.integers(0, U64), st.integers(0, U64)
    ),
    fr.FrameType.CHANNEL_ERROR: st.builds(fr.ChannelError, channel_st, code_st, message_st),
    fr.FrameType.PING: st.builds(fr.Ping, st.integers(0, U64)),
    fr.FrameType.PONG: st.builds(fr.Pong, st.integers(0, U64)),
    fr.FrameType.GOAWAY: st.builds(fr.GoAway, code_st, message_st),
    fr.FrameType.PORTS: st.builds(fr.Ports, st.lists(port_entry_st, max_size=3)),
    fr.FrameType.RESUME: st.builds(fr.Resume, st.text(max_size=fr.MAX_TOKEN), st.lists(offsets_st, max_size=4)),
    fr.FrameType.RESUMED: st.builds(fr.Resumed, st.lists(offsets_st, max_size=4)),
    fr.FrameType.RESUME_FAIL: st.builds(fr.ResumeFail, code_st, message_st),
    fr.FrameType.DEVICE_STATUS: st.builds(fr.DeviceStatus, channel_st, st.sampled_from(fr.DEVICE_STATES), message_st),
    fr.FrameType.FLOW: st.builds(fr.Flow, channel_st, st.booleans()),
}
frame_st = st.one_of(*STRATEGIES.values())

# One hand-made instance of every type, for the table-driven malformation tests below.
SAMPLES: list[fr.Frame] = [
    fr.Hello(1, {"role": "client"}),
    fr.Open(1, "gps", PortSettings(4800), ControlRequest(dtr=True), 1000),
    fr.OpenOk(1, PortSettings(4800), 1000, {"device": "/dev/ttyUSB0"}),
    fr.OpenFail(1, ErrorCode.PORT_BUSY, "in use by bob"),
    fr.Close(1, ErrorCode.NORMAL, ""),
    fr.Data(1, b"abc"),
    fr.WindowUpdate(1, 500),
    fr.SetSettings(1, PortSettings(9600)),
    fr.Settings(1, PortSettings(9600)),
    fr.SetControl(1, ControlRequest(rts=False)),
    fr.Control(1, ControlState(dtr=True)),
    fr.Modem(1, ModemLines.CTS),
    fr.PurgeRequest(1, Purge.RECEIVE),
    fr.ChannelError(1, ErrorCode.NOT_SUPPORTED, "no DTR"),
    fr.Ping(7),
    fr.Pong(7),
    fr.GoAway(ErrorCode.NORMAL, "bye"),
    fr.Ports([{"name": "gps"}]),
    fr.Resume("abc", [(1, 10, 5)]),
    fr.Resumed([(1, 10, 5)]),
    fr.ResumeFail(ErrorCode.NORMAL, "no such session"),
    fr.DeviceStatus(1, "gone", "unplugged"),
    fr.Flow(1, True),
    fr.WindowUpdate(1, 0, 4096),
]


def wire_fields(frame: fr.Frame) -> list[Any]:
    fields: list[Any] = msgpack.unpackb(encode_body(frame), raw=False)
    return fields


def pack(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return body


def test_every_frame_type_has_a_strategy_and_a_sample() -> None:
    assert set(STRATEGIES) == set(fr.FrameType)
    assert {s.TYPE for s in SAMPLES} == set(fr.FrameType)


@pytest.mark.parametrize("ftype", list(fr.FrameType), ids=lambda t: t.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip(ftype: fr.FrameType, data: st.DataObject) -> None:
    frame = data.draw(STRATEGIES[ftype])
    assert frame.TYPE is ftype
    body = encode_body(frame)
    decoded = decode_body(body)
    assert decoded == frame
    assert type(decoded) is type(frame)
    assert decode_body(memoryview(body)) == frame  # the decoder is handed memoryview slices
    assert encode_body(decoded) == body  # a canonical encoding: re-encoding changes nothing


def test_bodies_start_with_the_type_code() -> None:
    for sample in SAMPLES:
        fields = wire_fields(sample)
        assert fields[0] == int(sample.TYPE)


def test_field_order_matches_the_wire_document() -> None:
    assert wire_fields(fr.Data(3, b"x")) == [5, 3, b"x"]
    assert wire_fields(fr.OpenFail(3, ErrorCode.PORT_BUSY, "m")) == [3, 3, 11, "m"]
    assert wire_fields(fr.Open(2, "p", PortSettings(), ControlRequest(dtr=False), 64)) == [
        1,
        2,
        "p",
        {"baud": 9600, "bits": 8, "parity": "N", "stop": "1", "xonxoff": False, "rtscts": False},
        {"dtr": False},
        64,
    ]
    assert wire_fields(fr.OpenOk(2, PortSettings(), 64, {})) == [2, 2, PortSettings().to_wire(), 64, {}]
    assert wire_fields(fr.Control(1, ControlState())) == [10, 1, {"dtr": False, "rts": False, "break": False}]
    assert wire_fields(fr.GoAway(ErrorCode.VERSION_MISMATCH, "v")) == [16, 2, "v"]
    assert wire_fields(fr.Ping(U64)) == [14, U64]


def test_unknown_error_codes_survive_as_ints() -> None:
    frame = decode_body(pack([4, 1, 999, "from the future"]))
    assert frame == fr.Close(1, 999, "from the future")
    assert decode_body(pack([4, 1, 11, ""])) == fr.Close(1, ErrorCode.PORT_BUSY, "")


def test_nil_in_a_control_request_means_unchanged() -> None:
    wire = pack([9, 1, {"dtr": None, "rts": True}, 3, 700])
    assert decode_body(wire) == fr.SetControl(1, ControlRequest(rts=True), seq=3, offset=700)


def test_modem_low_bits_are_ignored() -> None:
    assert decode_body(pack([11, 1, 0x10 | 0x01])) == fr.Modem(1, ModemLines.CTS)
    assert decode_body(pack([11, 1, 0xFF])) == fr.Modem(1, ModemLines(0xF0))


@given(st.integers(0, U32), st.integers(0, 200_000))
@settings(max_examples=200)
def test_data_frame_header_is_the_msgpack_encoding(channel: int, size: int) -> None:
    payload = bytes(size)
    assert data_frame_header(channel, size) + payload == encode_frame(fr.Data(channel, payload))


@pytest.mark.parametrize("size", [0, 1, 0xFF, 0x100, 0xFFFF, 0x10000, 0x10001])
@pytest.mark.parametrize("channel", [0, 1, 127, 128, 255, 256, 0xFFFF, 0x10000, U32])
def test_data_frame_header_at_the_msgpack_size_boundaries(channel: int, size: int) -> None:
    payload = b"\xa5" * size
    assert data_frame_header(channel, size) + payload == encode_frame(fr.Data(channel, payload))


# --- malformed bodies ------------------------------------------------------------------------------


def rejects(body: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(body)
    assert str(info.value)  # always a message a user can read
    assert info.value.code == ErrorCode.PROTOCOL_ERROR
    return info.value


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TYPE.name)
def test_extra_and_missing_fields_are_rejected(sample: fr.Frame) -> None:
    fields = wire_fields(sample)
    if isinstance(sample, fr.WindowUpdate) and sample.size is None:
        fields = [*fields, 4096]  # the optional size: one more field than that is the extra one
    assert "fields" in str(rejects(pack([*fields, None])))
    optional = 1 if isinstance(sample, fr.WindowUpdate) else 0  # WINDOW without its size is whole
    for cut in range(1, len(fields) - optional):
        rejects(pack(fields[:cut]))


# A value of every msgpack type; for each field, every one whose Python type differs from the
# valid value's must be refused (bool is not an int, float is not an int, str is not bytes...).
WRONG_TYPES: list[Any] = [None, True, -1, 1.5, "x", b"x", [], {}, {"name": "x"}, [1, 2]]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.TYPE.name)
def test_wrong_field_types_are_rejected(sample: fr.Frame) -> None:
    fields = wire_fields(sample)
    for index in range(1, len(fields)):
        for wrong in WRONG_TYPES:
            if type(wrong) is type(fields[index]) and wrong != -1:
                continue  # same type: possibly valid (another map for a map field); -1 never is (all uints)
            rejects(pack([*fields[:index], wrong, *fields[index + 1 :]]))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="empty array"),
        pytest.param([None, 1], id="type not an int"),
        pytest.param([True, 1], id="type is a bool"),
        pytest.param([5.0, 1, b"x"], id="type is a float"),
        pytest.param([18], id="type 18 unknown"),
        pytest.param([99, 1, 2], id="type 99 unknown"),
        pytest.param([-1], id="negative type"),
        pytest.param({"type": 5}, id="a map"),
        pytest.param("DATA", id="a string"),
        pytest.param(5, id="a bare int"),
        pytest.param([5, 1 << 32, b"x"], id="channel above u32"),
        pytest.param([6, 1, MAX_WINDOW + 1], id="window above 2^30"),
        pytest.param([1, 1, "p" * (MAX_PORT_NAME + 1), PortSettings().to_wire(), {}, 1], id="port name too long"),
        pytest.param([4, 1, 0, "m" * (MAX_MESSAGE + 1)], id="message too long"),
        pytest.param([4, 1, 0x10000, ""], id="code above u16"),
        pytest.param([16, -1, ""], id="negative goaway code"),
        pytest.param([11, 1, 0x100], id="modem above a byte"),
        pytest.param([12, 1, 0, 0, 0], id="purge 0 reserved"),
        pytest.param([12, 1, 4, 0, 0], id="purge 4"),
        pytest.param([12, 1, 1], id="purge without its place (protocol 2)"),
        pytest.param([22, 1, 1], id="flow state not a bool"),
        pytest.param([12, 1, 1, -1, 0], id="negative operation number"),
        pytest.param([9, 1, {"dtr": True}, 0, 1.5], id="offset not an integer"),
        pytest.param([14, U64 + 1 - 1, 1], id="ping with an extra field"),
        pytest.param([9, 1, {"dtr": "yes"}, 0, 0], id="control value not a bool"),
        pytest.param([9, 1, {"dsr": True}, 0, 0], id="unknown control line"),
        pytest.param([10, 1, {"dtr": True, "rts": True}], id="incomplete control state"),
        pytest.param([0, 1, {1: "x"}], id="map with int key"),
        pytest.param([17, [{"device": "/dev/x"}]], id="port without a name"),
        pytest.param([17, [{"name": 5}]], id="port name not text"),
        pytest.param([17, ["gps"]], id="port entry not a map"),
        pytest.param([17, {"name": "gps"}], id="ports not a list"),
    ],
)
def test_malformed_bodies(body: object) -> None:
    rejects(pack(body))


BAD_SETTINGS: list[dict[str, Any]] = [
    {"baud": 0},
    {"baud": 100_000_001},
    {"baud": -1},
    {"baud": 9600.0},
    {"baud": True},
    {"baud": "9600"},
    {"bits": 9},
    {"bits": 4},
    {"bits": 8.0},
    {"bits": False},
    {"parity": "X"},
    {"parity": None},
    {"parity": "even"},
    {"stop": "3"},
    {"stop": 0},
    {"stop": None},
    {"xonxoff": 0},
    {"rtscts": "no"},
    {"rtscts": None},
]


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=str)
@pytest.mark.parametrize("ftype", [fr.FrameType.OPEN, fr.FrameType.OPEN_OK, fr.FrameType.SETTINGS])
def test_bad_settings_values(ftype: fr.FrameType, bad: dict[str, Any]) -> None:
    wire = {**PortSettings().to_wire(), **bad}
    body = {
        fr.FrameType.OPEN: [1, 1, "p", wire, {}, 10],
        fr.FrameType.OPEN_OK: [2, 1, wire, 10, {}],
        fr.FrameType.SETTINGS: [8, 1, wire],
    }[ftype]
    assert ftype.name in str(rejects(pack(body)))


@pytest.mark.parametrize("missing", ["baud", "bits", "parity", "stop", "xonxoff", "rtscts"])
def test_settings_with_a_missing_key(missing: str) -> None:
    wire = PortSettings().to_wire()
    del wire[missing]
    rejects(pack([7, 1, wire, 0, 0]))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved byte"),
        pytest.param(b"\x93\x05\x01", id="truncated array"),
        pytest.param(b"\x93\x05\x01\xc4\x05ab", id="truncated bin"),
        pytest.param(b"\x92\x0e\x01\x00", id="trailing byte"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32 claiming 4G items"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32 claiming 4 GiB"),
        pytest.param(b"\x91" * 100_000 + b"\x00", id="nested 100k deep"),
        pytest.param(b"\x92\x00\xd9\x02\xff\xfe", id="invalid utf-8 string"),
        pytest.param(b"\x92\x0e\xd4\x01\x00", id="ext type"),
    ],
)
def test_undecodable_msgpack(raw: bytes) -> None:
    rejects(raw)


@given(frame_st, st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_bodies_decode_or_raise_only_remote_protocol_error(frame: fr.Frame, data: st.DataObject) -> None:
    body = bytearray(encode_body(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if action == "flip" and body:
            body[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del body[position:]
        else:
            body[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_body(bytes(body))
    except RemoteProtocolError:
        return
    assert isinstance(decoded, fr.Frame)
    assert decode_body(encode_body(decoded)) == decoded  # whatever was accepted is well-formed


@given(st.binary(max_size=500))
@settings(max_examples=300)
def test_random_bodies_raise_only_remote_protocol_error(body: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_body(body)
