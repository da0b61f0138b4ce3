"""The client's local ports: virtual ports (PTYs behind symlinks), attached devices and TCP/RFC 2217
servers, each made once and wrapped in a :class:`ClientChannel` that outlives connections.

Kept apart from the session so that what the client creates on this machine (and later removes)
is decided in one place, whatever the hub says.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comtunnel.aio.client.channel import ClientChannel, LinkState
from comtunnel.errors import UsageError
from comtunnel.ports.base import SerialPort
from comtunnel.ports.open import make_server_port
from comtunnel.protocol.settings import ControlRequest, PortSettings
from comtunnel.specs import AttachSpec, LinkAccess, LinkSpec, ServeSpec, port_name_problem

log = logging.getLogger(__name__)

DEFAULT_LINK_DIR = Path("comtunnel-ports")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")  # in a hub's label (HOST:PORT), when it prefixes a link name


@dataclasses.dataclass(frozen=True)
class LocalPort:
    """A port someone else made (the console's stdin/stdout) for the hub's port ``name``. It is
    treated as an attached device: always open, DTR and RTS raised when the channel opens."""

    name: str
    port: SerialPort
    settings: PortSettings


class LocalPorts:
    def __init__(
        self,
        *,
        replay_bound: int,
        on_port_lost: Callable[[ClientChannel], None],
        link_access: LinkAccess | None = None,
    ) -> None:
        """``link_access``: the default mode, group and owner of the virtual ports (per link: LinkSpec)."""
        self.channels: dict[str, ClientChannel] = {}  # by the hub's port name
        self._link_access = link_access or LinkAccess()
        self._replay_bound = replay_bound
        self._on_port_lost = on_port_lost

    async def create_links(self, specs: list[LinkSpec]) -> None:
        from comtunnel.ports.pty import PtyPort

        for spec in specs:
            self._check_new(spec.port)
            pty = PtyPort(spec.path, spec.settings, access=spec.access.over(self._link_access))
            await self._add(spec.port, pty, spec.settings, virtual=True)
            log.info("%s: virtual port %s -> %s", spec.port, spec.path, pty.slave_path)

    async def create_attached(self, specs: list[AttachSpec]) -> None:
        from comtunnel.ports.device import DevicePort

        for spec in specs:
            self._check_new(spec.port)
            device = DevicePort(spec.device, spec.settings, ControlRequest(dtr=True, rts=True))
            await self._add(spec.port, device, spec.settings, virtual=False)
            log.info("%s: attached to local port %s", spec.port, spec.device)

    async def create_servers(self, specs: list[ServeSpec]) -> None:
        for spec in specs:
            self._check_new(spec.port)
            await self._add(spec.port, make_server_port(spec), PortSettings(), virtual=True)

    async def add_given(self, given: list[LocalPort]) -> None:
        for item in given:
            self._check_new(item.name)
            await self._add(item.name, item.port, item.settings, virtual=False)

    async def create_auto_links(
        self, hub_ports: list[dict[str, Any]], link_dir: Path | None, label: str, taken: set[str]
    ) -> None:
        """A virtual port for every port of the hub this client may use, under ``link_dir``; a link
        name another hub of this client took already gets the hub's label as a prefix."""
        directory = link_dir or DEFAULT_LINK_DIR
        specs = []
        for name in sorted({p["name"] for p in hub_ports if p.get("access") != "none"}):
            problem = port_name_problem(name)
            if problem is not None:  # a hostile or broken hub: its name never becomes a path
                log.warning("hub %s: not linking a port: %s", label, problem)
                continue
            link = name if name not in taken else f"{_UNSAFE.sub('_', label)}-{name}"
            taken.add(link)
            specs.append(LinkSpec(name, directory / link, PortSettings()))
        await self.create_links(specs)

    def snapshot(self) -> list[dict[str, Any]]:
        """What `comtunnel list --local` shows of each local port."""
        out = []
        for channel in self.channels.values():
            remote = getattr(channel, "remote_settings", None)
            out.append(
                {
                    "port": channel.name,
                    "local": channel.port.description,
                    "pty": getattr(channel.port, "slave_path", ""),
                    "state": channel.state.value
                    + (f": {channel.failure}" if channel.state is LinkState.FAILED else ""),
                    "settings": (remote or channel.settings).short(),
                    "app_open": channel.app_is_open,
                }
            )
        return out

    async def close(self) -> None:
        for channel in self.channels.values():
            channel.detach()
            await channel.port.close()

    async def _add(self, name: str, port: SerialPort, settings: PortSettings, *, virtual: bool) -> None:
        channel = ClientChannel(
            name, port, settings, virtual, replay_bound=self._replay_bound, on_port_lost=self._on_port_lost
        )
        await port.open(channel)
        port.pause_reading()  # until the channel is open
        self.channels[name] = channel

    def _check_new(self, name: str) -> None:
        if name in self.channels:
            raise UsageError(f"port {name!r} is given twice")
