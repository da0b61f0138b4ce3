"""`--port auto`: every serial port pyserial's list_ports finds, under a name that survives replugging.

Names come from /dev/serial/by-id (udev's stable ``usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0``),
cut down to the port-name alphabet, and the device path used is that by-id link, so a device that
comes back on another ttyUSBn is still the same port. Devices without a by-id link keep their
kernel name (ttyS0, ttyAMA0). :class:`PortWatcher` turns successive scans into hotplug events.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

BY_ID = Path("/dev/serial/by-id")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _list_ports() -> list[str]:
    from serial.tools import list_ports

    return [port.device for port in list_ports.comports()]


def port_name(text: str) -> str:
    name = _UNSAFE.sub("_", text).strip("._-") or "port"
    return name[:200]


def scan(by_id: Path = BY_ID, list_ports: Callable[[], Iterable[str]] = _list_ports) -> dict[str, str]:
    """Port name -> device path (the by-id link when there is one)."""
    links: dict[str, Path] = {}
    if by_id.is_dir():
        for link in sorted(by_id.iterdir()):
            try:
                links[os.path.realpath(link)] = link
            except OSError:
                continue
    devices = {os.path.realpath(d): d for d in list_ports()}
    for target in links:
        devices.setdefault(target, str(links[target]))
    found: dict[str, str] = {}
    for real, device in sorted(devices.items()):
        stable = links.get(real)
        name = port_name(stable.name if stable is not None else os.path.basename(device))
        base, n = name, 2
        while name in found:  # two devices reducing to one name: keep both
            name, n = f"{base}-{n}", n + 1
        found[name] = str(stable) if stable is not None else device
    return found


class PortWatcher:
    def __init__(self, by_id: Path = BY_ID, list_ports: Callable[[], Iterable[str]] = _list_ports) -> None:
        self.by_id = by_id
        self.list_ports = list_ports
        self.ports = scan(by_id, list_ports)

    def poll(self) -> tuple[dict[str, str], set[str]]:
        """(added name -> device, removed names) since the last poll."""
        now = scan(self.by_id, self.list_ports)
        added = {n: d for n, d in now.items() if self.ports.get(n) != d}
        removed = {n for n in self.ports if n not in now}
        self.ports = now
        return added, removed
