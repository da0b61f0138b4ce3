"""What the user asked for, as plain values: shared by the command line, the TOML config and the
asyncio shell, so none of them converts another's types."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from comtunnel.protocol.settings import PortSettings


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    """``--link PORT=PATH[,settings]``: a PTY at PATH for the hub's PORT."""

    port: str
    path: Path
    settings: PortSettings


@dataclasses.dataclass(frozen=True)
class ServeSpec:
    """``--raw PORT=HOST:TCP`` / ``--rfc2217 PORT=HOST:TCP``: serve the hub's PORT as a local TCP server."""

    port: str
    host: str
    tcp_port: int
    protocol: str  # "raw" or "rfc2217"


@dataclasses.dataclass(frozen=True)
class AttachSpec:
    """``--attach PORT=DEVICE[,settings]``: join the hub's PORT to an existing local serial port."""

    port: str
    device: str
    settings: PortSettings
