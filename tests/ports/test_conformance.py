"""One SerialPort contract, run against every port backend (in the manner of trio's check_half_closeable_stream).

Each backend gets a small harness that builds the port and plays its far end (the peer): the PTY master
behind a device, the application on a virtual port, a TCP or pyserial client of a server port, an RFC 2217
server (ours or ser2net) behind a remote port, the holder's channel feeding a monitor. The contract tests
talk only to ``SerialPort`` and the harness, so a new backend needs a harness, not new tests. What a
backend cannot do it must refuse with the library's own exception; the test then checks exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import serial
from listener import Recorder
from support import PtyDevice, open_app, read_exactly, wait_for, write_all

from comtunnel.errors import PortError, PortGone, PortNotSupported
from comtunnel.ports import termios2
from comtunnel.ports.base import SerialPort
from comtunnel.ports.device import DevicePort
from comtunnel.ports.network import NetworkServerPort
from comtunnel.ports.pty import PtyPort
from comtunnel.ports.rfc2217_remote import Rfc2217RemotePort
from comtunnel.ports.rfc2217_server import Rfc2217ServerPort
from comtunnel.ports.watch import WatchPort
from comtunnel.protocol.settings import ControlRequest, ControlState, Parity, PortSettings, Purge, StopBits

SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.exists("/usr/sbin/ser2net") else None)
OFF = ControlRequest(dtr=False, rts=False)
KiB = 1024
SETTINGS = (PortSettings(9600), PortSettings(115200), PortSettings(9600, 7, Parity.EVEN))
_BITS = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}


TRICKY = b"\r\x00\r\n\n\r\xff\xff\xff\x00\x11\x13\r"  # what telnet, NVT or a tty could rewrite


def pattern(size: int) -> bytes:
    """Every byte value, the sequences a layer could rewrite, then a pattern whose misplacement shows."""
    return bytes(range(256)) + TRICKY + bytes((i * 7 + i // 251) & 0xFF for i in range(size))


async def take(buffer: bytearray, size: int, timeout: float = 8.0) -> bytes:
    """The first ``size`` bytes a recorder got, removed from it; gives up once nothing came for 1 s."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while len(buffer) < size:
        now = time.monotonic()
        if len(buffer) != last:
            last, since = len(buffer), now
        assert now < deadline and now - since < 1.0, f"got {len(buffer)} of {size} bytes"
        await asyncio.sleep(0.005)
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


def termios_view(fd: int) -> PortSettings:
    """The line settings a tty holds, as the far end of the cable would see them."""
    t = termios2.get(fd)
    parity = Parity.NONE
    if t.cflag & termios.PARENB:
        parity = Parity.ODD if t.cflag & termios.PARODD else Parity.EVEN
    stop = StopBits.TWO if t.cflag & termios.CSTOPB else StopBits.ONE
    return PortSettings(t.baudrate, _BITS[t.cflag & termios.CSIZE], parity, stop)


class Harness:
    """A backend and its peer. Class attributes say what the backend can do; the tests check it does."""

    writable = True  # False: write, settings, control and purge are refused with PortNotSupported
    control = True  # False: set_control raises PortNotSupported (no DTR/RTS lines)
    peer_fields: tuple[str, ...] = ()  # the settings the peer can see
    gone: str | None = None  # what the peer going away looks like: "lost" (port_lost) or "closed" (app_open)
    comes_back = False  # the peer can return and the same port carries on
    payload_size = 64 * KiB
    drain_size = 1024 * KiB  # larger than any kernel buffer in between (loopback TCP takes about 4 MiB)
    xfail: ClassVar[dict[str, str]] = {}  # contract test name -> the backend bug that fails it
    skip: ClassVar[dict[str, str]] = {}  # contract test name -> why this harness cannot afford it
    server_port = 0  # a TCP client port: the server it connects to (close must let go of it)

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rec = Recorder()

    async def open(self) -> SerialPort:
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        """The peer sends ``data`` to the port."""
        raise NotImplementedError

    async def receive(self, size: int) -> bytes:
        """What the peer got from the port, exactly ``size`` bytes."""
        raise NotImplementedError

    async def peer_view(self) -> PortSettings | None:
        """The settings as the peer sees them (only ``peer_fields`` are compared)."""
        return None

    def expected(self, asked: PortSettings) -> PortSettings:
        """What apply_settings must report: the backend's documented reading of a request."""
        return asked

    async def peer_sets_baud(self, baud: int) -> bool:
        """The peer changes the line's baud rate (virtual ports); False where it has no way to."""
        return False

    async def peer_control(self) -> ControlState | None:
        return None

    async def leave(self) -> None:
        """The peer goes away (cable pulled, client disconnects, server dies)."""
        raise NotImplementedError

    async def come_back(self) -> None:
        raise NotImplementedError

    def dropped(self, port: SerialPort) -> int:
        """A port that does not hold its far end back counts what it loses while paused."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the harness opened (the test closes the port itself)."""


class MasterPeer(Harness):
    """The peer is the master of a PTY standing in for a device (the test keeps a slave fd for termios)."""

    device: PtyDevice

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(write_all, self.device.master, data)

    async def receive(self, size: int) -> bytes:
        return await asyncio.to_thread(read_exactly, self.device.master, size, 8)

    async def peer_view(self) -> PortSettings:
        return termios_view(self.device.slave)


class DevicePtyHarness(MasterPeer):
    """DevicePort on a PTY slave. A PTY has no modem lines and forces CS8, no parity."""

    control = False
    peer_fields = ("baudrate", "bytesize", "parity", "stopbits")
    gone = "lost"

    async def open(self) -> SerialPort:
        self.device = PtyDevice()
        port = DevicePort(self.device.path, PortSettings(115200), OFF)
        await port.open(self.rec)
        return port

    def expected(self, asked: PortSettings) -> PortSettings:
        return asked.replace(bytesize=8, parity=Parity.NONE)

    async def leave(self) -> None:
        os.close(self.device.master)

    async def close(self) -> None:
        self.device.close()


class DeviceLoopHarness(Harness):
    """DevicePort on pyserial's loop:// (the thread path); the peer is the loopback itself."""

    drain_size = 64 * KiB  # loop:// moves about 150 KiB/s; the writer thread still holds most of this

    async def open(self) -> SerialPort:
        self.port = DevicePort("loop://", PortSettings(115200), OFF)
        await self.port.open(self.rec)
        return self.port

    async def send(self, data: bytes) -> None:
        self.port.write(data)

    async def receive(self, size: int) -> bytes:
        return await take(self.rec.data, size)


class PtyPortHarness(Harness):
    """The virtual port; the peer is an application on the link. A PTY keeps no parity or data bits,
    so those are the link's; settings also flow from the application to the listener."""

    peer_fields = ("baudrate", "stopbits")
    gone = "closed"
    comes_back = True

    async def open(self) -> SerialPort:
        self.link = self.tmp / "ttyV0"
        self.app = -1
        self.port = PtyPort(self.link, PortSettings(115200))
        await self.port.open(self.rec)
        await self.come_back()
        return self.port

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(write_all, self.app, data)

    async def receive(self, size: int) -> bytes:
        return await asyncio.to_thread(read_exactly, self.app, size, 8)

    async def peer_view(self) -> PortSettings:
        return termios_view(self.app)

    async def peer_sets_baud(self, baud: int) -> bool:
        t = termios2.get(self.app)
        t.set_baudrate(baud)
        termios2.set(self.app, t)
        return True

    async def leave(self) -> None:
        os.close(self.app)
        self.app = -1

    async def come_back(self) -> None:
        self.app = open_app(self.link)
        await wait_for(lambda: self.port.app_is_open)

    async def close(self) -> None:
        if self.app >= 0:
            os.close(self.app)


class RemoteOwnServerHarness(Harness):
    """Rfc2217RemotePort against our own Rfc2217ServerPort, whose listener is the peer."""

    peer_fields = ("baudrate", "bytesize", "parity", "stopbits")
    gone = "lost"
    drain_size = 6144 * KiB

    async def open(self) -> SerialPort:
        self.srec = Recorder()
        self.server = Rfc2217ServerPort("conf", "127.0.0.1", 0)
        await self.server.open(self.srec)
        assert self.server.address is not None
        self.server_port = self.server.address[1]
        port = Rfc2217RemotePort(f"rfc2217://127.0.0.1:{self.server_port}", PortSettings(115200), OFF)
        await port.open(self.rec)
        return port

    async def send(self, data: bytes) -> None:
        self.server.write(data)

    async def receive(self, size: int) -> bytes:
        return await take(self.srec.data, size)

    async def peer_view(self) -> PortSettings:
        return self.server.settings

    async def peer_control(self) -> ControlState:
        return self.server.control

    async def leave(self) -> None:
        self.server.refuse_current("the server goes away")

    async def close(self) -> None:
        await self.server.close()


class RemoteSer2netHarness(MasterPeer):
    """Rfc2217RemotePort against a real ser2net serving a PTY; the peer is that PTY's master.
    ser2net never acknowledges DTR/RTS on a PTY: the port assumes them after its ack timeout."""

    peer_fields = ("baudrate",)
    gone = "lost"
    drain_size = 6144 * KiB

    def __init__(self, tmp: Path) -> None:
        if SER2NET is None:
            pytest.skip("ser2net is not installed (apt-get install ser2net)")
        super().__init__(tmp)
        self.proc: subprocess.Popen[bytes] | None = None

    async def open(self) -> SerialPort:
        assert SER2NET is not None
        self.device = PtyDevice()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            tcp = self.server_port = int(s.getsockname()[1])
        config = self.tmp / "ser2net.yaml"
        config.write_text(
            "connection: &dev\n"
            f"  accepter: telnet(rfc2217),tcp,127.0.0.1,{tcp}\n"
            f"  connector: serialdev,{self.device.path},115200n81,local\n"
            "  options:\n"
            "    kickolduser: true\n"
        )
        self.log = self.tmp / "ser2net.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [SER2NET, "-n", "-u", "-c", str(config), "-P", str(self.tmp / "ser2net.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", tcp), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # ser2net ends the probe's session
        port = Rfc2217RemotePort(f"rfc2217://127.0.0.1:{tcp}", PortSettings(115200), OFF)
        await port.open(self.rec)
        return port

    async def leave(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)

    async def close(self) -> None:
        try:
            if self.proc is not None:  # killed by PID, whatever state the test left it in
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        finally:
            if hasattr(self, "device"):
                self.device.close()


class RawServerHarness(Harness):
    """NetworkServerPort (raw TCP); the peer is a TCP client. Raw TCP carries no settings or lines."""

    gone = "closed"
    comes_back = True
    drain_size = 6144 * KiB

    async def open(self) -> SerialPort:
        self.writer: asyncio.StreamWriter | None = None
        self.port = NetworkServerPort("conf", "127.0.0.1", 0)
        await self.port.open(self.rec)
        await self.come_back()
        return self.port

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, size: int) -> bytes:
        return await self.reader.readexactly(size)

    async def leave(self) -> None:
        await self.close()
        self.writer = None

    async def come_back(self) -> None:
        assert self.port.address is not None
        opens = len(self.rec.opens)
        self.reader, self.writer = await asyncio.open_connection(*self.port.address)
        await wait_for(lambda: len(self.rec.opens) > opens)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


class Rfc2217ServerHarness(Harness):
    """Rfc2217ServerPort; the peer is pyserial's own rfc2217:// client (in threads). The client sets
    the line: its settings and DTR/RTS reach the listener, ours have no way back to it."""

    gone = "closed"
    comes_back = True
    skip: ClassVar[dict[str, str]] = {
        "test_write_buffer_drains_and_says_so": "pyserial's rfc2217 client reads about 220 KiB/s (a queue put per "
        "byte): draining the 4 MiB loopback TCP absorbs before our buffer holds anything takes 20 s; the drain "
        "path is NetworkServerPort's, checked by raw-server"
    }

    async def open(self) -> SerialPort:
        self.client: Any = None
        self.port = Rfc2217ServerPort("conf", "127.0.0.1", 0)
        await self.port.open(self.rec)
        await self.come_back()
        return self.port

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(self.client.write, data)

    async def receive(self, size: int) -> bytes:
        data: bytes = await asyncio.to_thread(self.client.read, size)
        return data

    async def peer_sets_baud(self, baud: int) -> bool:
        await asyncio.to_thread(setattr, self.client, "baudrate", baud)
        return True

    async def leave(self) -> None:
        await self.close()
        self.client = None

    async def come_back(self) -> None:
        assert self.port.address is not None
        url = f"rfc2217://127.0.0.1:{self.port.address[1]}"
        self.client = await asyncio.to_thread(serial.serial_for_url, url, baudrate=115200, timeout=8)
        await wait_for(lambda: bool(self.rec.opens) and self.rec.opens[-1])

    async def close(self) -> None:
        if self.client is not None:
            await asyncio.to_thread(self.client.close)


class WatchHarness(Harness):
    """WatchPort; the peer is the holder's channel calling feed(). A monitor may not write or change
    the line, and drops (counting) what comes while it is paused, never holding the device back."""

    writable = False
    control = False

    async def open(self) -> SerialPort:
        self.port = WatchPort("conf", {}, PortSettings(115200))
        await self.port.open(self.rec)
        return self.port

    async def send(self, data: bytes) -> None:
        self.port.feed(data)

    def dropped(self, port: SerialPort) -> int:
        assert isinstance(port, WatchPort)
        return port.dropped


HARNESSES: dict[str, type[Harness]] = {
    "device-pty": DevicePtyHarness,
    "device-loop": DeviceLoopHarness,
    "pty-port": PtyPortHarness,
    "remote-own-server": RemoteOwnServerHarness,
    "remote-ser2net": RemoteSer2netHarness,
    "raw-server": RawServerHarness,
    "rfc2217-server": Rfc2217ServerHarness,
    "watch": WatchHarness,
}
Body = Callable[[Harness, SerialPort, Recorder], Awaitable[None]]


@pytest.fixture(params=list(HARNESSES), ids=list(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    h = HARNESSES[request.param](tmp_path)
    if request.function.__name__ in h.skip:
        pytest.skip(h.skip[request.function.__name__])
    reason = h.xfail.get(request.function.__name__)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return h


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


def run(h: Harness, body: Body) -> None:
    """Open, run ``body`` (10 s at most), close port and peer; then no fd or thread may be left behind."""
    fds, threads = set(os.listdir("/proc/self/fd")), _threads()

    async def main() -> None:
        port: SerialPort | None = None
        try:
            port = await asyncio.wait_for(h.open(), 10)
            await asyncio.wait_for(body(h, port, h.rec), 10)
        finally:
            try:
                if port is not None:
                    await asyncio.wait_for(port.close(), 5)
            finally:
                await asyncio.wait_for(h.close(), 5)

    asyncio.run(main())
    deadline = time.monotonic() + 3
    while _threads() - threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _threads() - threads, f"threads left running: {_threads() - threads}"
    left = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - fds}
    left = {fd: target for fd, target in left.items() if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not left, f"file descriptors left open: {left}"


def connections_to(tcp_port: int) -> int:
    """How many of this process's sockets are connected to 127.0.0.1:tcp_port (from /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for r in rows if r[2] == f"0100007F:{tcp_port:04X}" and r[9] in inodes)


async def _send_quietly(h: Harness, data: bytes) -> None:
    """The peer sends after the port is gone: its own failure to do so is not the port's business."""
    with contextlib.suppress(OSError, PortError):
        await h.send(data)


# --- the contract ------------------------------------------------------------------------------------


def test_open_close_idempotent_and_silent_after(harness: Harness) -> None:
    """close() twice is fine, write afterwards is PortGone, and the listener hears nothing more."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        await port.close()
        await port.close()
        rec.closed = True
        if h.writable:
            with pytest.raises(PortGone):
                port.write(b"late")
        await _send_quietly(h, b"after close")
        await asyncio.sleep(0.15)
        assert rec.violations == [] and rec.lost == []

    run(harness, body)


def test_every_byte_value_both_ways_in_order(harness: Harness) -> None:
    """All 256 values (XON/XOFF too: flow control is off) and a patterned payload, each way, in order:
    one large write, then many small ones that must not overtake it."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        data = pattern(h.payload_size)
        if h.writable:
            half = len(data) // 2
            port.write(data[:half])
            for i in range(half, len(data), 997):
                port.write(data[i : i + 997])
            assert await h.receive(len(data)) == data
        else:
            with pytest.raises(PortNotSupported):
                port.write(data)
        rec.data.clear()
        await h.send(data)
        assert await take(rec.data, len(data)) == data
        await asyncio.sleep(0.05)
        assert rec.data == b"" and rec.violations == []

    run(harness, body)


def test_write_buffer_drains_and_says_so(harness: Harness) -> None:
    """A write larger than the kernel buffers is partly held; once the peer reads it all the buffer is
    empty again and port_drained has fired (the moment the bridge returns credit)."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        if not h.writable:
            with pytest.raises(PortNotSupported):
                port.write(b"x")
            assert port.write_buffer_size == 0
            return
        data = pattern(h.drain_size)
        port.write(data)
        assert port.write_buffer_size > 0, "more than any kernel buffer must be held by the port"
        assert await h.receive(len(data)) == data
        await wait_for(lambda: port.write_buffer_size == 0 and rec.drained > 0)

    run(harness, body)


def test_pause_holds_data_and_resume_delivers_it(harness: Harness) -> None:
    """Nothing arrives while paused; on resume all of it in order, or (a port that does not hold its
    far end back) the loss is counted, never silent."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        port.pause_reading()
        rec.paused = True
        marker = b"while paused \x00\xff\x11\x13\r\n"
        for piece in (marker[:6], marker[6:]):
            await h.send(piece)
            await asyncio.sleep(0.1)
        assert rec.data == b""
        rec.paused = False
        port.resume_reading()
        after = b"after resume"
        await asyncio.sleep(0.05)
        await h.send(after)
        await wait_for(lambda: rec.data.endswith(after))
        if rec.data != marker + after:  # only a port that says it does not hold back may lose, and counts it
            assert not port.holds_back and rec.data == after and h.dropped(port) == len(marker), rec.data
        assert rec.violations == []

    run(harness, body)


def test_settings_round_trip(harness: Harness) -> None:
    """apply_settings returns what is in effect and the peer sees it where it can; where the peer
    sets the line (virtual ports), its change reaches the listener as app_settings."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        for asked in SETTINGS:
            if not h.writable:
                with pytest.raises(PortNotSupported):
                    await port.apply_settings(asked)
                continue
            effective = await port.apply_settings(asked)
            assert effective == h.expected(asked)
            fields = h.peer_fields

            async def seen(e: PortSettings = effective, f: tuple[str, ...] = fields) -> bool:
                view = await h.peer_view()
                return view is not None and all(getattr(view, n) == getattr(e, n) for n in f)

            deadline = time.monotonic() + 2
            while fields and not await seen():
                assert time.monotonic() < deadline, f"the peer sees {await h.peer_view()}, not {effective}"
                await asyncio.sleep(0.01)
        if await h.peer_sets_baud(57600):
            await wait_for(lambda: bool(rec.settings) and rec.settings[-1].baudrate == 57600)

    run(harness, body)


def test_purge_keeps_what_follows(harness: Harness) -> None:
    """purge discards what came before, never what is written or received after it."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        for which in (Purge.RECEIVE, Purge.TRANSMIT, Purge.BOTH):
            if not h.writable:
                with pytest.raises(PortNotSupported):
                    await port.purge(which)
                continue
            await port.purge(which)
            marker = f"after purge {which.name}".encode() + b"\x00\xff\x11\x13"
            port.write(marker)
            assert await h.receive(len(marker)) == marker
            rec.data.clear()
            await h.send(marker)
            assert await take(rec.data, len(marker)) == marker

    run(harness, body)


def test_control_lines_set_or_refused(harness: Harness) -> None:
    """set_control returns the ControlState in effect, or says PortNotSupported with a reason."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        for dtr, rts in ((True, True), (False, True), (False, False)):
            request = ControlRequest(dtr=dtr, rts=rts)
            if not h.control:
                with pytest.raises(PortNotSupported, match=r"\w+"):
                    await port.set_control(request)
                continue
            state = await port.set_control(request)
            assert isinstance(state, ControlState) and (state.dtr, state.rts) == (dtr, rts)
            far = await h.peer_control()
            if far is not None:
                assert (far.dtr, far.rts) == (dtr, rts)

    run(harness, body)


def test_peer_gone_and_back(harness: Harness) -> None:
    """The peer leaves: a device or server is lost (port_lost once, a PortError); a client of a
    server or virtual port closes (app_open False) and the next one gets a working port."""
    if harness.gone is None:
        pytest.skip(f"{type(harness).__name__}: no far end that can go away")

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        await h.leave()
        if h.gone == "lost":
            await wait_for(lambda: bool(rec.lost), 5)
            await asyncio.sleep(0.2)
            assert len(rec.lost) == 1 and isinstance(rec.lost[0], PortError), rec.lost
            with pytest.raises(PortGone):
                port.write(b"x")
        else:
            await wait_for(lambda: rec.opens[-1:] == [False])
            assert rec.lost == []
        if h.comes_back:
            await h.come_back()
            assert rec.opens[-1]
            port.write(b"back \x00\xff")
            assert await h.receive(7) == b"back \x00\xff"
            await h.send(b"again")
            assert await take(rec.data, 5) == b"again"
        assert rec.violations == []

    run(harness, body)


def test_close_during_operations_is_prompt(harness: Harness) -> None:
    """close() while a big write and a settings change are in flight returns within 5 s; the
    operation ends (a result or a PortError, nothing else) and the listener is silent afterwards."""

    async def body(h: Harness, port: SerialPort, rec: Recorder) -> None:
        if h.writable:
            port.write(pattern(h.drain_size))  # the peer does not read: it stays in flight
        operation = asyncio.ensure_future(port.apply_settings(PortSettings(9600, stopbits=StopBits.TWO)))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.wait_for(port.close(), 5)
        rec.closed = True
        done, _ = await asyncio.wait([operation], timeout=5)
        assert done, "the operation never ended after close()"
        assert time.monotonic() - started < 5
        exc = operation.exception()
        assert exc is None or isinstance(exc, PortError), repr(exc)
        if h.server_port:
            await wait_for(lambda: connections_to(h.server_port) == 0, 2)  # a stalled server does not keep it
        await _send_quietly(h, b"after close")
        await asyncio.sleep(0.15)
        assert rec.violations == []

    run(harness, body)
