"""``comtunnel demo``: the whole product on one machine, with nothing to set up.

Throwaway certificates, an emulated GPS and an echo device on PTYs, a hub and a client talking
mutual TLS over 127.0.0.1, and a small built-in application on the client's virtual ports so
traffic shows from the first second. Everything lives in a temporary directory that is removed
on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import termios
import time
import tty
from pathlib import Path

from comtunnel.aio.client import Client, LinkSpec
from comtunnel.aio.hub import Hub, PortSpec
from comtunnel.certs import init_certs
from comtunnel.devices.emulated import EchoDevice, GpsDevice
from comtunnel.errors import ComtunnelError
from comtunnel.protocol.settings import PortSettings
from comtunnel.tls import client_context, hub_context

log = logging.getLogger(__name__)


class DemoApp:
    """Stands in for the user's application: reads the GPS port, pings the echo port."""

    def __init__(self, gps_path: Path, echo_path: Path) -> None:
        self.gps_fd = _open_raw(gps_path)
        self.echo_fd = _open_raw(echo_path)
        self.gps_bytes = 0
        self.last_sentence = ""
        self._gps_line = b""
        self.echo_sent = 0
        self.echo_ok = 0
        self._echo_buffer = b""
        self._expected = b""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.gps_fd, self._read_gps)
        loop.add_reader(self.echo_fd, self._read_echo)

    def _read_gps(self) -> None:
        data = _read(self.gps_fd)
        self.gps_bytes += len(data)
        self._gps_line += data
        *lines, self._gps_line = self._gps_line.split(b"\r\n")
        if lines:
            self.last_sentence = lines[-1].decode("ascii", "replace")[:60]

    def _read_echo(self) -> None:
        self._echo_buffer += _read(self.echo_fd)
        while self._expected and self._echo_buffer.startswith(self._expected):
            self._echo_buffer = self._echo_buffer[len(self._expected) :]
            self._expected = b""
            self.echo_ok += 1

    def ping(self) -> None:
        if self._expected:
            return  # the previous one has not come back yet
        self.echo_sent += 1
        # Bytes applications worry about: 0x00, 0xFF, XON/XOFF, CR/LF.
        self._expected = f"ping {self.echo_sent} ".encode() + bytes([0, 0xFF, 0x11, 0x13, 13, 10])
        os.write(self.echo_fd, self._expected)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self.gps_fd, self.echo_fd):
            loop.remove_reader(fd)
            os.close(fd)


def _open_raw(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = termios.B9600
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, OSError):
        return b""


async def run_demo(stop: asyncio.Event, *, seconds: float | None = None, with_app: bool = True) -> None:
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("comtunnel").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="comtunnel-demo-") as tmp:
        base = Path(tmp)
        certs = base / "certs"
        init_certs(certs, ["127.0.0.1"], ["demo"])
        gps, echo = GpsDevice(9600), EchoDevice()
        hub = Hub([PortSpec("gps", gps.path), PortSpec("echo", echo.path)], hub_context(certs))
        client: Client | None = None
        client_task: asyncio.Task[None] | None = None
        app: DemoApp | None = None
        try:
            (host, port), *_ = await hub.start("127.0.0.1", 0)
            links = [
                LinkSpec("gps", base / "ports" / "gps", PortSettings(9600)),
                LinkSpec("echo", base / "ports" / "echo", PortSettings(115200)),
            ]
            client = Client(host, port, client_context(certs, "demo"), links=links)
            client_task = asyncio.ensure_future(client.run())
            await asyncio.wait_for(_ready(client, client_task), 15)
            _say(f"hub on {host}:{port} (mutual TLS) serving 2 emulated devices; client links:")
            for link in links:
                _say(f"  {link.port:5} {link.path}  ({link.settings.short()})")
            if with_app:
                app = DemoApp(links[0].path, links[1].path)
                _say("a built-in app is reading gps and pinging echo; run with --no-app to try yourself:")
            else:
                _say("try one:")
            _say(f"  {sys.executable} -m serial.tools.miniterm {links[0].path} 9600")
            _say("Ctrl-C stops" + (f"; stopping after {seconds:g} s" if seconds else ""))
            await _show_traffic(client, app, stop, seconds)
            if client_task.done():
                client_task.result()  # raises what stopped it
        finally:
            if app is not None:
                app.close()
            if client is not None and client_task is not None:
                client.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client_task, 5)
            await hub.close()
            gps.close()
            echo.close()
    _say("demo stopped; temporary certificates and links removed")


async def _ready(client: Client, task: asyncio.Task[None]) -> None:
    waiter = asyncio.ensure_future(client.ready.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
        raise ComtunnelError("the demo client stopped before its ports were ready")


async def _show_traffic(client: Client, app: DemoApp | None, stop: asyncio.Event, seconds: float | None) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    interactive = sys.stdout.isatty()
    while not stop.is_set():
        if app is not None:
            app.ping()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        parts = []
        for name, ch in client.channels.items():
            parts.append(f"{name}: {ch.bytes_to_port} B from device, {ch.bytes_from_port} B to device")
        line = " | ".join(parts)
        if app is not None:
            line += f" | echo ok {app.echo_ok}/{app.echo_sent}"
        print(("\r" + line + "   ") if interactive else line, end="" if interactive else "\n", flush=True)
        if deadline is not None and time.monotonic() >= deadline:
            break
    if interactive:
        print()
    if app is not None and app.last_sentence:
        _say(f"last GPS sentence: {app.last_sentence}")
    quiet = [name for name, ch in client.channels.items() if not ch.bytes_to_port]
    if app is not None and quiet:
        raise ComtunnelError(f"no traffic reached the application on: {', '.join(quiet)}")


def _say(text: str) -> None:
    print(text, flush=True)
