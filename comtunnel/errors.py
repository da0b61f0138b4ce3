"""comtunnel's own exception types, mapped to CLI messages and exit codes in :mod:`comtunnel.cli`.

Three families, so the edge can say whose fault a failure was: local misuse (bad arguments or
config: exit 2), a port or device problem, and the peer misbehaving or being unreachable.
Protocol state machines raise their own types (:mod:`comtunnel.protocol.errors`).
"""

from __future__ import annotations

from comtunnel.protocol.errors import ErrorCode


class ComtunnelError(Exception):
    """Base: the message is meant for the user, without a traceback."""

    exit_code = 1


class UsageError(ComtunnelError):
    """The user asked for something impossible (bad option, bad config value)."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file is wrong; the message names the file and the key."""


class CertificateError(ComtunnelError):
    """Missing, unreadable or mismatched certificates or keys."""

    exit_code = 3


class PeerError(ComtunnelError):
    """The other end could not be reached, refused us, or broke the protocol."""

    exit_code = 4


class PortError(ComtunnelError):
    """A serial port could not do what was asked. ``code`` is what the tunnel reports."""

    code: ErrorCode = ErrorCode.PORT_UNAVAILABLE
    exit_code = 5


class PortUnavailable(PortError):
    """The device does not exist, or we may not open it."""

    code = ErrorCode.PORT_UNAVAILABLE


class PortBusy(PortError):
    """Someone else has the port."""

    code = ErrorCode.PORT_BUSY


class PortNotSupported(PortError):
    """The device cannot do this (a PTY has no DTR); report it once and carry on."""

    code = ErrorCode.NOT_SUPPORTED


class PortGone(PortError):
    """The device went away while open (USB unplugged, EIO)."""

    code = ErrorCode.DEVICE_GONE


#: A log level between INFO and DEBUG (``-v``): connection details, TLS peers, every retry.
DETAIL = 15
