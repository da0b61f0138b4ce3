"""Protocol exceptions and the error codes that travel on the wire.

Following h11: a :class:`LocalProtocolError` is our own misuse of a state machine (a bug or
a caller ignoring a window), a :class:`RemoteProtocolError` is the peer breaking the protocol.
Decoders raise nothing else, whatever bytes they are fed.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Codes carried by OPEN_FAIL, CLOSE, CHANNEL_ERROR and GOAWAY frames (see docs/wire-format.md)."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    VERSION_MISMATCH = 2
    FLOW_CONTROL_ERROR = 3
    FRAME_TOO_LARGE = 4
    INTERNAL_ERROR = 5
    TOO_MANY_CHANNELS = 6
    HUB_BUSY = 7  # at a limit of its own: sessions, memory for partial frames
    UNKNOWN_PORT = 10
    PORT_BUSY = 11
    PORT_UNAVAILABLE = 12
    NOT_SUPPORTED = 13
    ACCESS_DENIED = 14
    DEVICE_GONE = 15
    INVALID_SETTINGS = 16

    @classmethod
    def coerce(cls, value: int) -> ErrorCode | int:
        """Keep unknown codes from newer peers as plain ints instead of failing."""
        try:
            return cls(value)
        except ValueError:
            return value


class ProtocolError(Exception):
    """Base of every error a protocol state machine raises."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We asked the state machine for something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""
