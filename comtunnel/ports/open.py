"""Port construction in one place: what a name or URL on the command line becomes.

The hub opens devices (``/dev/ttyUSB0``, any pyserial URL, ``rfc2217://`` for a port that
ser2net serves) and both ends make TCP servers for the gateways (raw or RFC 2217). Backends are
imported when first used, so a process that never opens an RFC 2217 port never loads its code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from comtunnel.ports.base import SerialPort
from comtunnel.ports.linetrace import LineTrace
from comtunnel.ports.network import NetworkServerPort
from comtunnel.ports.unixsock import UnixEndpoint
from comtunnel.protocol.settings import ControlRequest, PortSettings
from comtunnel.specs import ServeSpec


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A hub port: the name clients ask for and the device (path or URL) behind it."""

    name: str
    device: str

    @property
    def missing(self) -> bool:
        """A device path that does not exist now (URLs such as ``loop://`` are never missing)."""
        return self.device.startswith("/") and not os.path.exists(self.device)


PortFactory = Callable[[PortSpec, PortSettings, ControlRequest], SerialPort]


def open_device(
    spec: PortSpec, settings: PortSettings, control: ControlRequest, trace: LineTrace | None = None
) -> SerialPort:
    """The hub's device behind ``spec``; with a ``trace``, its line operations are recorded (not those of an
    ``rfc2217://`` port: its server applies them, and keeps its own trace if it has one)."""
    if spec.device.startswith("rfc2217://"):
        from comtunnel.ports.rfc2217_remote import Rfc2217RemotePort

        return Rfc2217RemotePort(spec.device, settings, control)
    from comtunnel.ports.device import DevicePort

    return DevicePort(spec.device, settings, control, trace=trace.for_port(spec.name) if trace else None)


def traced_devices(trace: LineTrace) -> PortFactory:
    """:func:`open_device` recording into ``trace`` (``hub --line-trace``)."""
    return lambda spec, settings, control: open_device(spec, settings, control, trace)


def make_server_port(spec: ServeSpec) -> NetworkServerPort:
    """A gateway's listening side: ``raw`` (socat, netcat) or ``rfc2217`` (pyserial, hub4com)."""
    unix = UnixEndpoint(spec.unix_path, spec.unix_mode, spec.unix_group) if spec.unix_path is not None else None
    kind: type[NetworkServerPort] = NetworkServerPort
    if spec.protocol == "rfc2217":
        from comtunnel.ports.rfc2217_server import Rfc2217ServerPort

        kind = Rfc2217ServerPort
    return kind(spec.port, spec.host, spec.tcp_port, idle_timeout=spec.idle_timeout, takeover=spec.takeover, unix=unix)
