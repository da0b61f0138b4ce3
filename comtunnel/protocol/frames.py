"""The frames of the tunnel protocol, as values: what each carries. :mod:`codec` turns them into
bytes and back; docs/wire-format.md documents each layout and must follow these two files.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from .errors import ErrorCode
from .settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge


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


DEVICE_STATES = ("gone", "open")  # of DEVICE_STATUS
MAX_RESUME_CHANNELS = 4096
MAX_TOKEN = 64
