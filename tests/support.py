"""Test scaffolding: PTY 'devices', an 'application' side, hub/client in-process or as CLI processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import serial

from comtunnel.aio.client import Client, LinkSpec
from comtunnel.aio.hub import Hub, PortSpec
from comtunnel.protocol.settings import PortSettings
from comtunnel.tls import client_context, hub_context


class PtyDevice:
    """A PTY pair standing in for a serial device: the hub opens `path`, the test talks on `master`."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_app(path: Path) -> int:
    """Open a virtual port the way an application does, raw, blocking."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def open_app_seen(path: Path, client: Proc, name: str, timeout: float = 10.0) -> int:
    """open_app, then wait until the client noticed (inotify): before that, device output is dropped,
    as it is for any port no application has open."""
    line = f"{name}: application opened the port"
    before = client.text().count(line)
    fd = open_app(path)
    deadline = time.monotonic() + timeout
    while client.text().count(line) <= before:
        if time.monotonic() > deadline:
            raise AssertionError(f"the client did not notice {path} being opened:\n{client.text()}")
        time.sleep(0.02)
    return fd


def read_exactly(fd: int, size: int, timeout: float = 30.0) -> bytes:
    """Blocking read of `size` bytes from a fd (run in a thread); fails loudly on timeout."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(out)} of {size} bytes")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            out += os.read(fd, min(65536, size - len(out)))
    return bytes(out)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        select.select([], [fd], [], 5)
        view = view[os.write(fd, view[:16384]) :]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> float:
    """Wait until predicate() holds; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running_hub(certs: Path, ports: dict[str, str]) -> AsyncIterator[tuple[Hub, int]]:
    hub = Hub([PortSpec(n, d) for n, d in ports.items()], hub_context(certs))
    (_, port), *_ = await hub.start("127.0.0.1", 0)
    try:
        yield hub, port
    finally:
        await hub.close()


@contextlib.asynccontextmanager
async def running_client(
    certs: Path, port: int, links: dict[str, Path], name: str = "alice", settings: PortSettings | None = None
) -> AsyncIterator[Client]:
    specs = [LinkSpec(p, path, settings or PortSettings(115200)) for p, path in links.items()]
    client = Client("127.0.0.1", port, client_context(certs, name), links=specs)
    task = asyncio.ensure_future(client.run())
    ready = asyncio.ensure_future(client.ready.wait())
    await asyncio.wait([ready, task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    assert client.ready.is_set(), "client did not get its channels open"
    try:
        yield client
    finally:
        client.stop()
        await asyncio.wait_for(task, 10)


def comtunnel(*args: str) -> list[str]:
    return [sys.executable, "-m", "comtunnel", *args]


class Proc:
    """A comtunnel process whose stderr goes to a file we can search."""

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.log = tmp / f"{name}.log"
        self._out = self.log.open("wb")
        # each process its own runtime dir, so several hubs' control sockets never collide
        self.runtime_dir = tmp / f"{name}.run"
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.runtime_dir)}
        self.popen = subprocess.Popen(comtunnel(*args), stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text()):
                return m
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; output:\n{self.text()}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        return self.popen.returncode


def start_hub(tmp: Path, certs: Path, procs: list[Proc], *args: str, name: str = "hub") -> str:
    """A `comtunnel hub` on 127.0.0.1 with an ephemeral port; returns that port once it listens."""
    hub = Proc(tmp, name, "hub", "--listen", "127.0.0.1:0", "--certs", str(certs), *args)
    procs.append(hub)
    return hub.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1)


def start_client(tmp: Path, certs: Path, procs: list[Proc], hub_port: str, *args: str, name: str = "client") -> Proc:
    """A `comtunnel client` (certificate 'alice') dialling the hub on 127.0.0.1:hub_port."""
    client = Proc(
        tmp, name, "client", "--connect", f"127.0.0.1:{hub_port}", "--certs", str(certs), "--name", "alice", *args
    )
    procs.append(client)
    return client


def start_relay(
    tmp: Path, certs: Path, procs: list[Proc], *args: str, port: int = 0, name: str = "relay"
) -> tuple[Proc, int]:
    """A `comtunnel relay` on 127.0.0.1 (status on tmp/relay.sock); returns it and its port once it listens."""
    relay = Proc(
        tmp,
        name,
        "-vv",
        "relay",
        "--listen",
        f"127.0.0.1:{port}",
        "--certs",
        str(certs),
        "--control-socket",
        str(tmp / "relay.sock"),
        *args,
    )
    procs.append(relay)
    return relay, int(relay.wait_for(r"relay listening on 127\.0\.0\.1:(\d+)").group(1))


class EchoDevice(PtyDevice):
    """A PTY 'device' that sends back everything it receives (a thread on the master side)."""

    def __init__(self) -> None:
        super().__init__()
        self.echoed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"echo {self.path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
                write_all(self.master, data)
            except OSError:
                return
            self.echoed += len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        super().close()


def payload(seed: int, size: int) -> bytes:
    """Random bytes with every byte value in them (0x00, 0xFF, XON/XOFF, CR/LF...)."""
    data = bytearray(random.Random(seed).randbytes(max(0, size - 256)))
    data[len(data) // 2 : len(data) // 2] = bytes(range(256))
    return bytes(data[:size])


def echo_cycle(link: Path, seed: int, size: int) -> None:
    """Open, tty.setraw() (TCSAFLUSH), write at once, read the whole echo, close."""
    fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        data = payload(seed, size)
        write_all(fd, data)
        got = read_exactly(fd, len(data), timeout=10)
        assert got == data, f"open {seed}: the echo differs"
    finally:
        os.close(fd)


def pyserial_cycle(link: Path, seed: int, size: int) -> None:
    """pyserial's open flushes (reset_input_buffer); the reply to what follows must be whole."""
    with serial.Serial(str(link), 115200, timeout=10) as port:
        data = payload(seed, size)
        port.write(data)
        got = port.read(len(data))
        assert got == data, f"open {seed}: {len(got)} of {len(data)} bytes came back"


async def echo_cycles(link: Path, opens: int = 100) -> None:
    """``opens`` tty.setraw opens with a 16 KiB echo each, then as many pyserial opens with 4 KiB."""
    for i in range(opens):
        await asyncio.to_thread(echo_cycle, link, i, 16384)
    for i in range(opens):
        await asyncio.to_thread(pyserial_cycle, link, 1000 + i, 4096)
