"""What the user asked for, as plain values: shared by the command line, the TOML config and the
asyncio shell, so none of them converts another's types."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from comtunnel.errors import UsageError
from comtunnel.protocol.settings import PortSettings

MAX_NAME = 200  # a file name; --port auto makes names up to this long from by-id links
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def port_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a port, or None. A port name becomes a file name on the client
    (its link under --link-dir), so it is one path component from a small ASCII set, never '.',
    '..' or hidden, whoever sent it."""
    if not isinstance(name, str) or not name:
        return "a port name must be a non-empty string"
    if len(name) > MAX_NAME:
        return f"port name {name[:MAX_NAME]!r}... is longer than {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return f"port name {name!r} may use only ASCII letters, digits, '-', '_' and '.', and not start with '.' or '-'"
    return None


def shown_name(name: object) -> str:
    """A port name as it may appear in a log line or a table: a peer's unsafe name is quoted and
    cut short, so it cannot forge lines or send terminal escapes."""
    return name if isinstance(name, str) and port_name_problem(name) is None else repr(name)[:80]


def check_port_name(name: str) -> str:
    problem = port_name_problem(name)
    if problem is not None:
        raise UsageError(problem)
    return name


@dataclasses.dataclass(frozen=True)
class LinkAccess:
    """Who may open a virtual port: the PTY's mode, group and owner (``mode=0660,group=dialout``, as
    socat's ``PTY,mode=660,group=dialout``). None keeps what the system gives a new PTY (its
    creator only)."""

    mode: int | None = None
    group: str | None = None
    owner: str | None = None  # root only

    def over(self, default: LinkAccess) -> LinkAccess:
        """These values, and ``default``'s where these have none."""
        return LinkAccess(
            self.mode if self.mode is not None else default.mode,
            self.group if self.group is not None else default.group,
            self.owner if self.owner is not None else default.owner,
        )


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    """``--link PORT=PATH[,settings][,mode=0660,group=NAME,owner=NAME]``: a PTY at PATH for the hub's PORT."""

    port: str
    path: Path
    settings: PortSettings
    access: LinkAccess = LinkAccess()


@dataclasses.dataclass(frozen=True)
class ServeSpec:
    """``--raw PORT=HOST:TCP`` / ``--rfc2217 PORT=HOST:TCP``: serve the hub's PORT as a local TCP server.

    ``idle_timeout`` (``--gateway-idle``, 0: none) disconnects a TCP client that sent nothing for
    that many seconds; ``takeover`` (``--gateway-takeover``) lets a new TCP client take the port
    from the connected one instead of being refused."""

    port: str
    host: str
    tcp_port: int
    protocol: str  # "raw" or "rfc2217"
    idle_timeout: float = 0.0
    takeover: bool = False
    unix_path: Path | None = None  # ``PORT=unix:PATH[,mode=0660][,group=NAME]``: a Unix socket, not TCP
    unix_mode: int = 0o600
    unix_group: str | None = None


@dataclasses.dataclass(frozen=True)
class AttachSpec:
    """``--attach PORT=DEVICE[,settings]``: join the hub's PORT to an existing local serial port."""

    port: str
    device: str
    settings: PortSettings
