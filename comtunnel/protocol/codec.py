"""Frames to bytes and back: a 4-byte big-endian body length, then a msgpack body.

Every body is ``[type, ...fields]`` with positional fields (compact, and strict to decode).
:func:`decode_body` checks the type and shape of every field and raises only
:class:`RemoteProtocolError`; :func:`encode_body` trusts its input, which our own code built.

The length is checked against the maximum as soon as its 4 bytes arrive (unlike h2, which buffers
a whole body first), so a hostile length costs us nothing. A partial frame is never consumed: the
decoder keeps an offset into its buffer and compacts only between calls.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from .errors import ErrorCode, RemoteProtocolError
from .frames import (
    DEVICE_STATES,
    MAX_RESUME_CHANNELS,
    MAX_TOKEN,
    ChannelError,
    Close,
    Control,
    Data,
    DeviceStatus,
    Flow,
    Frame,
    FrameType,
    GoAway,
    Hello,
    Modem,
    Open,
    OpenFail,
    OpenOk,
    Ping,
    Pong,
    Ports,
    PurgeRequest,
    Resume,
    Resumed,
    ResumeFail,
    SetControl,
    SetSettings,
    Settings,
    WindowUpdate,
)
from .limits import DEFAULT_MAX_FRAME, MAX_DATA_CHUNK, MAX_MESSAGE, MAX_PORT_NAME, MAX_WINDOW
from .settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge, SettingsError

_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size


def encode_frame(frame: Frame) -> bytes:
    body = encode_body(frame)
    return _LENGTH.pack(len(body)) + body


def encode_data(out: list[bytes], channel: int, data: bytes | memoryview) -> None:
    """Append DATA frames carrying ``data`` to ``out``, split at the chunk limit; the payload is
    copied once, into its frame."""
    size = len(data)
    if size <= MAX_DATA_CHUNK:
        out.append(data_frame_header(channel, size))
        out.append(bytes(data))
        return
    view = memoryview(data)
    for start in range(0, size, MAX_DATA_CHUNK):
        chunk = view[start : start + MAX_DATA_CHUNK]
        out.append(data_frame_header(channel, len(chunk)))
        out.append(bytes(chunk))


class FrameDecoder:
    """Feed bytes with :meth:`feed`, take whole frames out with :meth:`frames`."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes and return every frame now complete. Raises only RemoteProtocolError.

        After an error the decoder is unusable: the stream has lost its framing.
        """
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        offset = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - offset >= HEADER_SIZE:
                (length,) = _LENGTH.unpack_from(buf, offset)
                if length > self.max_frame:
                    raise RemoteProtocolError(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame}",
                        ErrorCode.FRAME_TOO_LARGE,
                    )
                start = offset + HEADER_SIZE
                if end - start < length:
                    break
                stop = start + length
                frames.append(_plain_data(buf, view, start, stop) or decode_body(view[start:stop]))
                offset = stop
        finally:
            view.release()
        if offset:
            del buf[:offset]
        return frames


def _plain_data(buf: bytearray, view: memoryview, start: int, stop: int) -> Data | None:
    """DATA in the form every comtunnel writes (see :func:`data_frame_header`), read without msgpack;
    None for anything else, which the general decoder then parses and judges. The hot path: one
    call per frame instead of a decode, a field reader and an enum lookup."""
    if stop - start < 4 or buf[start] != 0x93 or buf[start + 1] != 0x05:
        return None
    pos = start + 2
    channel = buf[pos]
    if channel < 0x80:
        pos += 1
    elif channel == 0xCC and stop - pos > 2:
        channel = buf[pos + 1]
        pos += 2
    elif channel == 0xCD and stop - pos > 3:
        channel = (buf[pos + 1] << 8) | buf[pos + 2]
        pos += 3
    else:
        return None
    kind = buf[pos]
    if kind == 0xC4 and stop - pos >= 2:
        size, pos = buf[pos + 1], pos + 2
    elif kind == 0xC5 and stop - pos >= 3:
        size, pos = (buf[pos + 1] << 8) | buf[pos + 2], pos + 3
    elif kind == 0xC6 and stop - pos >= 5:
        size, pos = int.from_bytes(buf[pos + 1 : pos + 5], "big"), pos + 5
    else:
        return None
    if pos + size != stop:
        return None  # a payload that does not fill the frame exactly: let the strict decoder say why
    return Data(channel, bytes(view[pos:stop]))


# --- frame bodies ----------------------------------------------------------------------------


def encode_body(frame: Frame) -> bytes:
    """Serialize a frame body (without the length prefix)."""
    body: bytes = msgpack.packb(_fields(frame), use_bin_type=True)
    return body


def _fields(frame: Frame) -> list[Any]:
    t = int(frame.TYPE)
    match frame:
        case Data(channel, data):
            return [t, channel, data]
        case WindowUpdate(channel, increment, None):
            return [t, channel, increment]
        case WindowUpdate(channel, increment, size):
            return [t, channel, increment, size]
        case Hello(version, info):
            return [t, version, info]
        case Open(channel, port, settings, control, window):
            return [t, channel, port, settings.to_wire(), control.to_wire(), window]
        case OpenOk(channel, settings, window, info):
            return [t, channel, settings.to_wire(), window, info]
        case OpenFail(channel, code, message) | Close(channel, code, message) | ChannelError(channel, code, message):
            return [t, channel, int(code), message]
        case SetSettings(channel, settings, seq, offset):
            return [t, channel, settings.to_wire(), seq, offset]
        case Settings(channel, settings):
            return [t, channel, settings.to_wire()]
        case SetControl(channel, request, seq, offset):
            return [t, channel, request.to_wire(), seq, offset]
        case Control(channel, state):
            return [t, channel, state.to_wire()]
        case Modem(channel, lines):
            return [t, channel, int(lines)]
        case PurgeRequest(channel, which, seq, offset):
            return [t, channel, int(which), seq, offset]
        case Ping(token) | Pong(token):
            return [t, token]
        case GoAway(code, message):
            return [t, int(code), message]
        case Ports(ports):
            return [t, ports]
        case Resume(token, channels):
            return [t, token, [list(c) for c in channels]]
        case Resumed(channels):
            return [t, [list(c) for c in channels]]
        case ResumeFail(code, message):
            return [t, int(code), message]
        case DeviceStatus(channel, state, message):
            return [t, channel, state, message]
        case Flow(channel, stopped):
            return [t, channel, stopped]
    raise TypeError(f"cannot encode {frame!r}")


# --- decoding -------------------------------------------------------------------------------


def decode_body(body: bytes | memoryview) -> Frame:
    """Parse and validate one frame body. Raises only RemoteProtocolError."""
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types; wrap only this call
        raise RemoteProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise RemoteProtocolError("frame is not an array starting with a type code")
    try:
        ftype = FrameType(obj[0])
    except ValueError:
        raise RemoteProtocolError(f"unknown frame type {obj[0]}") from None
    try:
        frame: Frame = _DECODERS[ftype](_Fields(ftype, obj))
        return frame
    except SettingsError as exc:
        raise RemoteProtocolError(f"{ftype.name}: {exc}") from None


class _Fields:
    """Typed, bounds-checked access to a frame's positional fields (asyncssh's check_end idea)."""

    def __init__(self, ftype: FrameType, obj: list[Any]) -> None:
        self.ftype = ftype
        self.obj = obj
        self.pos = 1

    def _next(self) -> Any:
        if self.pos >= len(self.obj):
            raise RemoteProtocolError(f"{self.ftype.name} frame is too short")
        value = self.obj[self.pos]
        self.pos += 1
        return value

    def end(self) -> None:
        if self.pos != len(self.obj):
            raise RemoteProtocolError(f"{self.ftype.name} frame has {len(self.obj)} fields")

    def uint(self, limit: int = (1 << 32) - 1) -> int:
        value = self._next()
        if type(value) is not int or not 0 <= value <= limit:
            raise RemoteProtocolError(f"{self.ftype.name}: bad integer field {value!r:.40}")
        return value

    def text(self, limit: int = MAX_MESSAGE) -> str:
        value = self._next()
        if type(value) is not str or len(value) > limit:
            raise RemoteProtocolError(f"{self.ftype.name}: bad text field")
        return value

    def binary(self) -> bytes:
        value = self._next()
        if type(value) is not bytes:
            raise RemoteProtocolError(f"{self.ftype.name}: data field is not binary")
        return value

    def mapping(self) -> dict[str, Any]:
        value = self._next()
        if type(value) is not dict or not all(type(k) is str for k in value):
            raise RemoteProtocolError(f"{self.ftype.name}: bad map field")
        return value

    def code(self) -> ErrorCode | int:
        return ErrorCode.coerce(self.uint(0xFFFF))

    def settings(self) -> PortSettings:
        return PortSettings.from_wire(self.mapping())

    def control_request(self) -> ControlRequest:
        raw = self.mapping()
        values = {k: raw.get(k) for k in ("dtr", "rts", "break")}
        if set(raw) - set(values) or not all(v is None or type(v) is bool for v in values.values()):
            raise RemoteProtocolError(f"{self.ftype.name}: bad control map")
        return ControlRequest(dtr=values["dtr"], rts=values["rts"], break_=values["break"])

    def control_state(self) -> ControlState:
        req = self.control_request()
        if req.dtr is None or req.rts is None or req.break_ is None:
            raise RemoteProtocolError(f"{self.ftype.name}: incomplete control state")
        return ControlState(dtr=req.dtr, rts=req.rts, break_=req.break_)


def _done(fields: _Fields, frame: Frame) -> Frame:
    fields.end()
    return frame


def _ports(f: _Fields) -> Frame:
    value = f._next()
    if type(value) is not list or not all(type(p) is dict and type(p.get("name")) is str for p in value):
        raise RemoteProtocolError("PORTS: bad port list")
    return _done(f, Ports(value))


def _offsets(f: _Fields) -> list[tuple[int, int, int]]:
    value = f._next()
    if type(value) is not list or len(value) > MAX_RESUME_CHANNELS:
        raise RemoteProtocolError(f"{f.ftype.name}: bad channel list")
    out = []
    for item in value:
        if (
            type(item) is not list
            or len(item) != 3
            or not all(type(v) is int and 0 <= v < 1 << 64 for v in item)
            or item[2] > item[1]
        ):
            raise RemoteProtocolError(f"{f.ftype.name}: bad channel entry {item!r:.60}")
        out.append((item[0], item[1], item[2]))
    return out


def _device_status(f: _Fields) -> Frame:
    channel, state, message = f.uint(), f.text(16), f.text()
    if state not in DEVICE_STATES:
        raise RemoteProtocolError(f"DEVICE_STATUS: unknown state {state!r}")
    return _done(f, DeviceStatus(channel, state, message))


_U64 = (1 << 64) - 1

_DECODERS: dict[FrameType, Any] = {
    FrameType.HELLO: lambda f: _done(f, Hello(f.uint(), f.mapping())),
    FrameType.OPEN: lambda f: _done(
        f, Open(f.uint(), f.text(MAX_PORT_NAME), f.settings(), f.control_request(), f.uint(MAX_WINDOW))
    ),
    FrameType.OPEN_OK: lambda f: _done(f, OpenOk(f.uint(), f.settings(), f.uint(MAX_WINDOW), f.mapping())),
    FrameType.OPEN_FAIL: lambda f: _done(f, OpenFail(f.uint(), f.code(), f.text())),
    FrameType.CLOSE: lambda f: _done(f, Close(f.uint(), f.code(), f.text())),
    FrameType.DATA: lambda f: _done(f, Data(f.uint(), f.binary())),
    FrameType.WINDOW: lambda f: _done(
        f, WindowUpdate(f.uint(), f.uint(MAX_WINDOW), f.uint(MAX_WINDOW) if f.pos < len(f.obj) else None)
    ),
    FrameType.SET_SETTINGS: lambda f: _done(f, SetSettings(f.uint(), f.settings(), f.uint(_U64), f.uint(_U64))),
    FrameType.SETTINGS: lambda f: _done(f, Settings(f.uint(), f.settings())),
    FrameType.SET_CONTROL: lambda f: _done(f, SetControl(f.uint(), f.control_request(), f.uint(_U64), f.uint(_U64))),
    FrameType.CONTROL: lambda f: _done(f, Control(f.uint(), f.control_state())),
    FrameType.MODEM: lambda f: _done(f, Modem(f.uint(), ModemLines(f.uint(0xFF) & 0xF0))),
    FrameType.PURGE: lambda f: _done(f, PurgeRequest(f.uint(), _purge(f), f.uint(_U64), f.uint(_U64))),
    FrameType.CHANNEL_ERROR: lambda f: _done(f, ChannelError(f.uint(), f.code(), f.text())),
    FrameType.PING: lambda f: _done(f, Ping(f.uint((1 << 64) - 1))),
    FrameType.PONG: lambda f: _done(f, Pong(f.uint((1 << 64) - 1))),
    FrameType.GOAWAY: lambda f: _done(f, GoAway(f.code(), f.text())),
    FrameType.PORTS: _ports,
    FrameType.RESUME: lambda f: _done(f, Resume(f.text(MAX_TOKEN), _offsets(f))),
    FrameType.RESUMED: lambda f: _done(f, Resumed(_offsets(f))),
    FrameType.RESUME_FAIL: lambda f: _done(f, ResumeFail(f.code(), f.text())),
    FrameType.DEVICE_STATUS: _device_status,
    FrameType.FLOW: lambda f: _done(f, Flow(f.uint(), _bool(f))),
}


def _bool(f: _Fields) -> bool:
    value = f._next()
    if type(value) is not bool:
        raise RemoteProtocolError(f"{f.ftype.name}: bad boolean field {value!r:.40}")
    return value


def _purge(f: _Fields) -> Purge:
    value = f.uint(3)
    if value == 0:
        raise RemoteProtocolError("PURGE: value 0 is reserved")
    return Purge(value)


def data_frame_header(channel: int, size: int) -> bytes:
    """Length prefix and msgpack head of a DATA frame, so the payload is copied only once.

    Equal to ``encode_frame(Data(channel, payload))`` minus the payload itself.
    """
    head = _DATA_HEADS.get(channel) or _data_head(channel)
    if size < 0x100:
        head += bytes((0xC4, size))
    elif size < 0x10000:
        head += b"\xc5" + size.to_bytes(2, "big")
    else:
        head += b"\xc6" + size.to_bytes(4, "big")
    return (len(head) + size).to_bytes(4, "big") + head


#: The fixed start of a DATA frame body per channel id (array of 3, type, channel): one dict
#: lookup per frame instead of a msgpack call. Channel ids are bounded (MAX_CHANNELS per
#: connection), so the table is too.
_DATA_HEADS: dict[int, bytes] = {}


def _data_head(channel: int) -> bytes:
    head: bytes = b"\x93\x05" + msgpack.packb(channel)
    if len(_DATA_HEADS) < 65536:
        _DATA_HEADS[channel] = head
    return head
