"""End to end, as applications use a port: what they write and every line change they make arrive
complete and in order, through real TLS on 127.0.0.1, real PTYs and real processes' habits
(``tty.setraw`` flushes, pyserial's open flushes, a baud change between two writes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import termios
import threading
import time
import tty
from pathlib import Path

import pytest
import serial
import uvloop
from faultproxy import FaultProxy
from support import (
    EchoDevice,
    PtyDevice,
    echo_cycles,
    payload,
    read_exactly,
    running_client,
    running_hub,
    wait_for,
    write_all,
)

from comtunnel.aio.client import Client, LinkSpec, ServeSpec
from comtunnel.aio.hub import Hub, PortSpec
from comtunnel.policy.admission import AdmissionLimits
from comtunnel.ports import termios2
from comtunnel.protocol import rfc2217 as r
from comtunnel.protocol.settings import PortSettings
from comtunnel.tls import client_context, hub_context


@pytest.mark.timeout(180)
def test_100_setraw_opens_and_100_pyserial_opens_get_every_reply(certs: Path, tmp_path: Path) -> None:
    device = EchoDevice()
    link = tmp_path / "dev"

    async def main() -> None:
        async with running_hub(certs, {"dev": device.path}) as (_, port):
            async with running_client(certs, port, {"dev": link}):
                await echo_cycles(link)

    try:
        asyncio.run(main())
    finally:
        device.close()


@pytest.mark.timeout(60)
def test_a_baud_change_between_two_writes_waits_for_the_first(certs: Path, tmp_path: Path) -> None:
    """TCSADRAIN semantics across the tunnel: the device's rate changes after the bytes before it
    reached the device, and before any byte after it."""
    device = PtyDevice()
    link = tmp_path / "dev"
    first, second = payload(1, 1 << 20), payload(2, 4096)
    pty_buffer = 128 * 1024  # what a PTY holds between the hub's write and the device's read, at most

    def rate() -> int:
        return termios2.get(device.slave).baudrate

    async def main() -> None:
        async with running_hub(certs, {"dev": device.path}) as (_, port):
            async with running_client(certs, port, {"dev": link}):
                app = os.open(link, os.O_RDWR | os.O_NOCTTY)
                tty.setraw(app)
                await wait_for(lambda: rate() == 115200, timeout=5)
                changed = termios.tcgetattr(app)
                changed[4] = changed[5] = termios.B9600

                def application() -> None:
                    write_all(app, first)
                    termios.tcsetattr(app, termios.TCSADRAIN, changed)  # on a PTY this returns at once
                    write_all(app, second)

                writer = asyncio.ensure_future(asyncio.to_thread(application))
                got = bytearray()
                seen_early = []
                while len(got) < len(first):
                    if rate() != 115200:
                        seen_early.append(len(got))
                    got += await asyncio.to_thread(read_exactly, device.master, min(4096, len(first) - len(got)))
                await writer
                assert bytes(got) == first
                assert not [n for n in seen_early if n < len(first) - pty_buffer], (
                    f"the rate changed after only {seen_early[0]} of {len(first)} bytes had been read"
                )
                await wait_for(lambda: rate() == 9600, timeout=5)
                assert await asyncio.to_thread(read_exactly, device.master, len(second)) == second
                os.close(app)

    try:
        asyncio.run(main())
    finally:
        device.close()


# --- resumption never costs the hub a connection slot -----------------------------------------------


@pytest.mark.timeout(180)
def test_300_resumed_connections_then_a_new_client_is_served(certs: Path, tmp_path: Path) -> None:
    device = EchoDevice()
    link = tmp_path / "dev"

    async def main() -> None:
        # far fewer slots than cuts: one leaked handshake or session slot per cut would show at once
        limits = AdmissionLimits(begin=2, full=2, per_source=2, sessions=2)
        hub = Hub([PortSpec("dev", device.path)], hub_context(certs), admission=limits)
        (_, hub_port), *_ = await hub.start("127.0.0.1", 0)
        try:
            with FaultProxy("127.0.0.1", hub_port) as proxy:
                async with running_client(certs, proxy.port, {"dev": link}) as client:
                    app = os.open(link, os.O_RDWR | os.O_NOCTTY)
                    tty.setraw(app)
                    resumed = 0
                    for cut in range(300):
                        proxy.cut()
                        await wait_for(lambda: not client.connected.is_set(), timeout=10, interval=0.001)
                        await wait_for(client.connected.is_set, timeout=10, interval=0.001)
                        resumed += 1
                        if cut % 50 == 0:  # and the port works on the resumed session
                            data = payload(cut, 2000)
                            await asyncio.to_thread(write_all, app, data)
                            assert await asyncio.to_thread(read_exactly, app, len(data), 10) == data
                    assert resumed == 300
                    await wait_for(lambda: len(hub.live) == 1, timeout=5)
                    assert hub.admission.sessions == 1 and hub.admission.startup_count == 0
                    os.close(app)
                await wait_for(lambda: not hub.live, timeout=5)
            # a new client, with nothing else connected, is served
            async with running_client(certs, hub_port, {"dev": tmp_path / "again"}, name="bob"):
                assert len(hub.live) == 1
        finally:
            await hub.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


# --- gateways hold what a TCP client sends before the device is attached -----------------------------


def _raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)  # at once, while the device is still being opened
        got = bytearray()
        while len(got) < len(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return bytes(got)


def _rfc2217_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Data right behind the telnet negotiation. Without CR: before BINARY is agreed, a telnet client
    sends CR as CR NUL (RFC 854), which real clients avoid by waiting for the negotiation."""
    assert b"\r" not in data
    codec = r.Rfc2217Client()
    codec.start()
    codec.send_data(data)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(codec.data_to_send())
        got = bytearray()
        while len(got) < len(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in codec.receive_data(chunk):
                if isinstance(event, r.SerialDataReceived):
                    got += event.data
            if answers := codec.data_to_send():
                sock.sendall(answers)
        return bytes(got)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", ["raw", "rfc2217"])
def test_gateways_echo_what_a_client_sends_at_connect(kind: str, loop: str, certs: Path) -> None:
    """uvloop delivers a read even after pause_reading() in connection_made: the port holds it."""
    exchange = _raw_exchange if kind == "raw" else _rfc2217_exchange

    def payload_for(seed: int) -> bytes:
        data = payload(seed, 2000)
        return data if kind == "raw" else data.replace(b"\r", b"\n")

    async def main() -> None:
        hub = Hub([PortSpec("loop", "loop://")], hub_context(certs), serve=[ServeSpec("loop", "127.0.0.1", 0, kind)])
        (_, hub_port), *_ = await hub.start("127.0.0.1", 0)
        hub_side = hub.gateways[0].app.address
        try:
            for i in range(20):
                data = payload_for(i)
                assert await asyncio.to_thread(exchange, hub_side, data) == data, f"hub {kind} gateway, connection {i}"
                await wait_for(lambda: "loop" not in hub.holders, timeout=5)
            # the client's gateway: the same port through the tunnel
            client = Client(
                "127.0.0.1", hub_port, client_context(certs, "alice"), serve=[ServeSpec("loop", "127.0.0.1", 0, kind)]
            )
            task = asyncio.ensure_future(client.run())
            try:
                await asyncio.wait_for(client.ready.wait(), 10)
                client_side = client.channels["loop"].port.address  # type: ignore[attr-defined]
                for i in range(20):
                    data = payload_for(100 + i)
                    got = await asyncio.to_thread(exchange, client_side, data)
                    assert got == data, f"client {kind} gateway, connection {i}"
            finally:
                client.stop()
                await asyncio.wait_for(task, 10)
        finally:
            await hub.close()

    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


# --- two ports at a 12 Mbaud line's rate while the connection is reset -------------------------------


@pytest.mark.timeout(120)
def test_two_ports_both_ways_through_six_resets(certs: Path, tmp_path: Path) -> None:
    size, rate = 2 << 20, 1.1e6  # 2 MiB each way per port at about 1.1 MB/s
    devices = {"a": PtyDevice(), "b": PtyDevice()}
    links = {name: tmp_path / name for name in devices}

    def paced_write(fd: int, data: bytes) -> None:
        start = time.monotonic()
        for offset in range(0, len(data), 16384):
            write_all(fd, data[offset : offset + 16384])
            ahead = (offset + 16384) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)

    async def main() -> None:
        async with running_hub(certs, {n: d.path for n, d in devices.items()}) as (_, hub_port):
            with FaultProxy("127.0.0.1", hub_port) as proxy:
                settings = PortSettings(12_000_000)
                specs = [LinkSpec(n, p, settings) for n, p in links.items()]
                client = Client("127.0.0.1", proxy.port, client_context(certs, "alice"), links=specs)
                task = asyncio.ensure_future(client.run())
                try:
                    await asyncio.wait_for(client.ready.wait(), 10)
                    apps = {}
                    for name, path in links.items():
                        apps[name] = os.open(path, os.O_RDWR | os.O_NOCTTY)
                        tty.setraw(apps[name])
                    await asyncio.sleep(0.2)  # the client sees the opens (inotify) before the device talks
                    jobs = []
                    for i, (name, dev) in enumerate(devices.items()):
                        up, down = payload(10 + i, size), payload(20 + i, size)
                        jobs += [
                            asyncio.to_thread(paced_write, apps[name], up),
                            asyncio.to_thread(paced_write, dev.master, down),
                            asyncio.to_thread(read_exactly, dev.master, size, 60),
                            asyncio.to_thread(read_exactly, apps[name], size, 60),
                        ]
                    streams = asyncio.gather(*jobs)
                    for _ in range(6):
                        await asyncio.sleep(0.7)
                        proxy.cut()
                    results = await streams
                    for i, name in enumerate(devices):
                        got_up, got_down = results[4 * i + 2], results[4 * i + 3]
                        assert got_up == payload(10 + i, size), f"{name}: app->device differs"
                        assert got_down == payload(20 + i, size), f"{name}: device->app differs"
                    # nothing doubled: no byte more arrives after the exact amount
                    await asyncio.sleep(0.3)
                    for name, dev in devices.items():
                        for fd in (dev.master, apps[name]):
                            os.set_blocking(fd, False)
                            with pytest.raises(BlockingIOError):
                                os.read(fd, 1)
                    for fd in apps.values():
                        os.close(fd)
                finally:
                    client.stop()
                    await asyncio.wait_for(task, 10)

    try:
        asyncio.run(main())
    finally:
        for dev in devices.values():
            dev.close()


# --- flow control the application can feel -------------------------------------------------------


@pytest.mark.timeout(60)
def test_xoff_from_the_device_blocks_the_applications_writes(certs: Path, tmp_path: Path) -> None:
    """pyserial's test_WriteTimeout through a virtual port: with xonxoff, the loopback device returns
    the XOFF the application wrote; the application's next write must block, as on a local port,
    and go on after XON."""
    device = EchoDevice()
    link = tmp_path / "dev"

    async def main() -> None:
        async with running_hub(certs, {"dev": device.path}) as (_, port):
            async with running_client(certs, port, {"dev": link}):

                def application() -> None:
                    with serial.Serial(str(link), 115200, xonxoff=True, write_timeout=1, timeout=5) as app:
                        app.write(serial.XOFF)
                        time.sleep(1)  # the XOFF's way round the loop
                        with pytest.raises(serial.SerialTimeoutException):
                            app.write(b"x" * 2800)
                        # the device's XON (written on its side) lets it go on
                        write_all(device.master, serial.XON)
                        time.sleep(0.5)
                        app.write_timeout = 5
                        app.write(b"after XON")

                await asyncio.to_thread(application)

    try:
        asyncio.run(main())
    finally:
        device.close()


@pytest.mark.timeout(60)
def test_a_slow_device_holds_the_application_back_and_a_flush_leaves_little_to_come(
    certs: Path, tmp_path: Path
) -> None:
    """A device that takes 10 KB/s: the window follows its drain rate, so the application gets only
    about the PTY buffers' worth ahead (51 KB measured; a fixed 256 KiB window let it get ~300 KiB ahead), and after
    a tcflush(TCOFLUSH) less than a second of output more comes than a flush on the device's own
    tty leaves (a PTY keeps what is in its line discipline; a UART, its FIFO)."""
    device = PtyDevice()
    link = tmp_path / "dev"
    taken = [0]
    stop = threading.Event()

    def slow_device() -> None:
        while not stop.is_set():
            if select.select([device.master], [], [], 0.1)[0]:
                taken[0] += len(os.read(device.master, 1024))
            time.sleep(0.1)

    async def main() -> None:
        async with running_hub(certs, {"dev": device.path}) as (_, port):
            async with running_client(certs, port, {"dev": link}):
                reader = threading.Thread(target=slow_device, daemon=True)
                reader.start()

                def application() -> tuple[int, int, int]:
                    fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                    tty.setraw(fd)
                    accepted, chunk, deadline = 0, payload(5, 4096), time.monotonic() + 3
                    while time.monotonic() < deadline:
                        try:
                            accepted += os.write(fd, chunk)
                        except BlockingIOError:
                            time.sleep(0.01)
                    ahead = accepted - taken[0]
                    termios.tcflush(fd, termios.TCOFLUSH)
                    time.sleep(0.5)  # the purge's way to the hub
                    before = taken[0]
                    time.sleep(2)
                    os.close(fd)
                    return accepted, ahead, taken[0] - before

                def local() -> int:
                    """The same flush made on the device's own tty, next to the hub's fd."""
                    fd = os.open(device.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                    try:
                        with contextlib.suppress(BlockingIOError):
                            while True:
                                os.write(fd, payload(6, 4096))
                        termios.tcflush(fd, termios.TCOFLUSH)
                        before = taken[0]
                        time.sleep(2)
                        return taken[0] - before
                    finally:
                        os.close(fd)

                accepted, ahead, after_flush = await asyncio.to_thread(application)
                baseline = await asyncio.to_thread(local)
                stop.set()
                reader.join(2)
                assert ahead < 192 * 1024, f"the application got {ahead} bytes ahead of the device ({accepted} written)"
                assert after_flush < baseline + 10 * 1024, (
                    f"{after_flush} bytes came after the flush (local: {baseline})"
                )

    try:
        asyncio.run(main())
    finally:
        device.close()


@pytest.mark.timeout(60)
def test_a_stopped_line_holds_each_direction_within_a_few_buffers(certs: Path, tmp_path: Path) -> None:
    """A device that takes nothing (CTS held low under rtscts looks the same to the hub: the tty's
    output stops) and an application that reads nothing: what the other end can write before it
    blocks is a few tty buffers plus the smallest window, not the 256 KiB window."""
    device = PtyDevice()
    link = tmp_path / "dev"

    def fill(fd: int, seconds: float) -> int:
        accepted, chunk, deadline = 0, payload(7, 4096), time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                accepted += os.write(fd, chunk)
            except BlockingIOError:
                time.sleep(0.01)
        return accepted

    async def main() -> None:
        async with running_hub(certs, {"dev": device.path}) as (_, port):
            async with running_client(certs, port, {"dev": link}):

                def both_ways() -> tuple[int, int]:
                    fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                    try:
                        tty.setraw(fd)
                        time.sleep(0.3)  # the open reached the hub
                        os.set_blocking(device.master, False)
                        return fill(fd, 3), fill(device.master, 3)
                    finally:
                        os.close(fd)

                to_device, to_app = await asyncio.to_thread(both_ways)
                # Measured: 46 KiB app->device, 48 KiB device->app (284 KiB with a fixed window).
                assert to_device < 160 * 1024, f"the application wrote {to_device} bytes to a stopped line"
                assert to_app < 160 * 1024, f"the device wrote {to_app} bytes to an application that reads nothing"

    try:
        asyncio.run(main())
    finally:
        device.close()
