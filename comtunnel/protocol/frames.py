"""Frame bodies of the tunnel protocol: one msgpack array per frame, type code first.

Theory of operation: every frame is ``[type, ...fields]`` with positional fields (compact, and
strict to decode). :func:`decode_body` checks the type and shape of every field and raises only
:class:`RemoteProtocolError`; :func:`encode_body` trusts its input, which our own code built.
The layout of each frame is documented in docs/wire-format.md, which must follow this file.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

import msgpack

from .errors import ErrorCode, RemoteProtocolError
from .limits import MAX_MESSAGE, MAX_PORT_NAME, MAX_WINDOW
from .settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge, SettingsError


class FrameType(enum.IntEnum):
    HELLO = 0
    OPEN = 1
    OPEN_OK = 2
    OPEN_FAIL = 3
    CLOSE = 4
    DATA = 5
    WINDOW = 6
    SET_SETTINGS = 7
    SETTINGS = 8
    SET_CONTROL = 9
    CONTROL = 10
    MODEM = 11
    PURGE = 12
    CHANNEL_ERROR = 13
    PING = 14
    PONG = 15
    GOAWAY = 16
    PORTS = 17
    RESUME = 18
    RESUMED = 19
    RESUME_FAIL = 20
    DEVICE_STATUS = 21
    FLOW = 22


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    TYPE: ClassVar[FrameType]


@dataclasses.dataclass(frozen=True, slots=True)
class Hello(Frame):
    """First frame from each side. ``info`` carries role, software, max_frame and (hub) ports."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    version: int
    info: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Open(Frame):
    TYPE: ClassVar[FrameType] = FrameType.OPEN
    channel: int
    port: str
    settings: PortSettings
    control: ControlRequest
    window: int


@dataclasses.dataclass(frozen=True, slots=True)
class OpenOk(Frame):
    TYPE: ClassVar[FrameType] = FrameType.OPEN_OK
    channel: int
    settings: PortSettings
    window: int
    info: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class OpenFail(Frame):
    TYPE: ClassVar[FrameType] = FrameType.OPEN_FAIL
    channel: int
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Close(Frame):
    TYPE: ClassVar[FrameType] = FrameType.CLOSE
    channel: int
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Data(Frame):
    TYPE: ClassVar[FrameType] = FrameType.DATA
    channel: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class WindowUpdate(Frame):
    TYPE: ClassVar[FrameType] = FrameType.WINDOW
    channel: int
    increment: int
    size: int | None = None  # the window granted from now on, when the receiver resizes it


@dataclasses.dataclass(frozen=True, slots=True)
class SetSettings(Frame):
    TYPE: ClassVar[FrameType] = FrameType.SET_SETTINGS
    channel: int
    settings: PortSettings
    seq: int = 0  # the channel's operation number: a replayed duplicate is recognised and skipped
    offset: int = 0  # the channel's byte offset it applies at: after every byte before, before every byte after


@dataclasses.dataclass(frozen=True, slots=True)
class Settings(Frame):
    TYPE: ClassVar[FrameType] = FrameType.SETTINGS
    channel: int
    settings: PortSettings


@dataclasses.dataclass(frozen=True, slots=True)
class SetControl(Frame):
    TYPE: ClassVar[FrameType] = FrameType.SET_CONTROL
    channel: int
    request: ControlRequest
    seq: int = 0  # the channel's operation number: a replayed duplicate is recognised and skipped
    offset: int = 0  # the channel's byte offset it applies at: after every byte before, before every byte after


@dataclasses.dataclass(frozen=True, slots=True)
class Control(Frame):
    TYPE: ClassVar[FrameType] = FrameType.CONTROL
    channel: int
    state: ControlState


@dataclasses.dataclass(frozen=True, slots=True)
class Modem(Frame):
    TYPE: ClassVar[FrameType] = FrameType.MODEM
    channel: int
    lines: ModemLines


@dataclasses.dataclass(frozen=True, slots=True)
class PurgeRequest(Frame):
    TYPE: ClassVar[FrameType] = FrameType.PURGE
    channel: int
    which: Purge
    seq: int = 0  # the channel's operation number: a replayed duplicate is recognised and skipped
    offset: int = 0  # the channel's byte offset it applies at: after every byte before, before every byte after


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelError(Frame):
    """A non-fatal problem on an open channel, e.g. a device that cannot set DTR."""

    TYPE: ClassVar[FrameType] = FrameType.CHANNEL_ERROR
    channel: int
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ping(Frame):
    TYPE: ClassVar[FrameType] = FrameType.PING
    token: int


@dataclasses.dataclass(frozen=True, slots=True)
class Pong(Frame):
    TYPE: ClassVar[FrameType] = FrameType.PONG
    token: int


@dataclasses.dataclass(frozen=True, slots=True)
class GoAway(Frame):
    TYPE: ClassVar[FrameType] = FrameType.GOAWAY
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ports(Frame):
    """The hub's port list for this client: a list of maps with at least 'name'."""

    TYPE: ClassVar[FrameType] = FrameType.PORTS
    ports: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Resume(Frame):
    """Client, right after HELLO: continue session ``token``; per open channel (id, received, consumed)."""

    TYPE: ClassVar[FrameType] = FrameType.RESUME
    token: str
    channels: list[tuple[int, int, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class Resumed(Frame):
    """Hub: the session continues; the channels it kept, with its (received, consumed) offsets."""

    TYPE: ClassVar[FrameType] = FrameType.RESUMED
    channels: list[tuple[int, int, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeFail(Frame):
    """Hub: no such session (expired, hub restarted): the client starts a new one."""

    TYPE: ClassVar[FrameType] = FrameType.RESUME_FAIL
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceStatus(Frame):
    """Hub: the device behind a channel is ``gone`` (unplugged) or ``open`` again; the channel stays."""

    TYPE: ClassVar[FrameType] = FrameType.DEVICE_STATUS
    channel: int
    state: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Flow(Frame):
    """The device stopped us (XOFF received, with software flow control) or let us go on (XON)."""

    TYPE: ClassVar[FrameType] = FrameType.FLOW
    channel: int
    stopped: bool


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


DEVICE_STATES = ("gone", "open")
_U64 = (1 << 64) - 1
MAX_RESUME_CHANNELS = 4096
MAX_TOKEN = 64

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
    head: bytes = b"\x93\x05" + msgpack.packb(channel)
    if size < 0x100:
        head += bytes((0xC4, size))
    elif size < 0x10000:
        head += b"\xc5" + size.to_bytes(2, "big")
    else:
        head += b"\xc6" + size.to_bytes(4, "big")
    return (len(head) + size).to_bytes(4, "big") + head
