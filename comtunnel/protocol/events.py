"""Events the multiplexer hands to its driver; frozen so nobody edits what the peer said."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ErrorCode
from .settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """The peer's HELLO arrived and its version is ours."""

    info: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class PortsUpdated(Event):
    ports: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelOpenRequested(Event):
    """Hub side: the client wants ``port``; answer with accept_channel or reject_channel."""

    channel: int
    port: str
    settings: PortSettings
    control: ControlRequest


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelOpened(Event):
    """Client side: the hub opened the device with these settings in effect."""

    channel: int
    settings: PortSettings
    info: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelOpenFailed(Event):
    channel: int
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelClosed(Event):
    """The channel is gone on both sides; ``by_peer`` tells who started the close."""

    channel: int
    code: ErrorCode | int
    message: str
    by_peer: bool


@dataclasses.dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """Call :meth:`Connection.consume` once these bytes are delivered, or the sender stalls."""

    channel: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class WindowOpened(Event):
    """More send credit on ``channel``: a paused reader may resume."""

    channel: int
    available: int


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsRequested(Event):
    channel: int
    settings: PortSettings


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsChanged(Event):
    channel: int
    settings: PortSettings


@dataclasses.dataclass(frozen=True, slots=True)
class ControlRequested(Event):
    channel: int
    request: ControlRequest


@dataclasses.dataclass(frozen=True, slots=True)
class ControlChanged(Event):
    channel: int
    state: ControlState


@dataclasses.dataclass(frozen=True, slots=True)
class ModemChanged(Event):
    channel: int
    lines: ModemLines


@dataclasses.dataclass(frozen=True, slots=True)
class PurgeRequested(Event):
    channel: int
    which: Purge


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelErrorReceived(Event):
    """A non-fatal report about a channel, e.g. 'device cannot set DTR'."""

    channel: int
    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class PongReceived(Event):
    token: int


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionTerminated(Event):
    """The peer sent GOAWAY: it will close the connection."""

    code: ErrorCode | int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeRequested(Event):
    """Hub side: the client wants session ``token`` back; answer with accept_resume or refuse_resume."""

    token: str
    channels: list[tuple[int, int, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class SessionResumed(Event):
    """Client side: these channels continue where they stopped; ``lost`` holds the ones the hub dropped,
    with the bytes we had sent on them and it never confirmed."""

    channels: list[int]
    lost: dict[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeRefused(Event):
    """Client side: the hub has no such session (it restarted, or the grace period ran out); every
    channel is gone, ``lost`` counts per channel what we had sent and it never confirmed."""

    code: ErrorCode | int
    message: str
    lost: dict[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceStatusChanged(Event):
    """Client side: the device is ``gone`` (unplugged) or ``open`` again; the channel stays."""

    channel: int
    state: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class FlowChanged(Event):
    """Client side: the device stopped the channel's output (XOFF) or let it go on (XON)."""

    channel: int
    stopped: bool
