"""The hub takes a port from a real ser2net (telnet(rfc2217)) and serves it through the tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from support import (
    EchoDevice,
    Proc,
    PtyDevice,
    echo_cycles,
    read_exactly,
    running_client,
    running_hub,
    start_client,
    start_hub,
    write_all,
)

SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.exists("/usr/sbin/ser2net") else None)
pytestmark = pytest.mark.skipif(SER2NET is None, reason="ser2net is not installed (apt-get install ser2net)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(tmp_path: Path, device: PtyDevice) -> Iterator[int]:
    """ser2net 4 serving ``device`` with RFC 2217 on 127.0.0.1; yields its TCP port."""
    port = _free_port()
    config = tmp_path / "ser2net.yaml"
    config.write_text(
        "connection: &dev\n"
        f"  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
        f"  connector: serialdev,{device.path},115200n81,local\n"
        "  options:\n"
        "    kickolduser: true\n"
    )
    log = (tmp_path / "ser2net.log").open("wb")
    assert SER2NET is not None
    proc = subprocess.Popen(
        [SER2NET, "-n", "-u", "-c", str(config), "-P", str(tmp_path / "ser2net.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "ser2net.log").read_text()
                assert proc.poll() is None, (tmp_path / "ser2net.log").read_text()
                time.sleep(0.05)
        time.sleep(0.2)  # ser2net closes the probe connection's session
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def ser2net(tmp_path: Path) -> Iterator[tuple[int, PtyDevice]]:
    device = PtyDevice()
    try:
        with serving(tmp_path, device) as port:
            yield port, device
    finally:
        device.close()


@pytest.mark.timeout(120)
def test_every_open_gets_its_whole_echo_through_ser2net(certs: Path, tmp_path: Path) -> None:
    """The flush at each open (tty.setraw, pyserial) reaches ser2net before the data, never after it."""
    device = EchoDevice()
    link = tmp_path / "s"

    async def main(s2n_port: int) -> None:
        async with running_hub(certs, {"s": f"rfc2217://127.0.0.1:{s2n_port}"}) as (_, port):
            async with running_client(certs, port, {"s": link}):
                await echo_cycles(link)

    try:
        with serving(tmp_path, device) as s2n_port:
            asyncio.run(main(s2n_port))
    finally:
        device.close()


@pytest.mark.timeout(120)
def test_ser2net_port_through_hub_and_client(
    ser2net: tuple[int, PtyDevice], certs: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    s2n_port, device = ser2net
    port = start_hub(tmp_path, certs, procs, "--port", f"s=rfc2217://127.0.0.1:{s2n_port}")
    hub = procs[-1]
    link = tmp_path / "s"
    client = start_client(tmp_path, certs, procs, port, "--link", f"s={link}")
    client.wait_for("s: open on the hub")

    app = serial.Serial(str(link), 115200, timeout=10)
    try:
        # settings made by the application reach the device behind ser2net
        app.baudrate = 57600
        app.stopbits = serial.STOPBITS_TWO
        deadline = time.monotonic() + 5
        while True:
            attrs = termios.tcgetattr(device.slave)
            if attrs[5] == termios.B57600 and attrs[2] & termios.CSTOPB:
                break
            assert time.monotonic() < deadline, f"device termios not updated: {attrs}"
            time.sleep(0.01)

        # 1 MiB with every byte value (0xFF included), each way
        up = bytearray(random.Random(1).randbytes((1 << 20) - 256))
        up[10:10] = bytes(range(256))
        down = bytes(reversed(up))
        got_down = bytearray()

        def app_reader() -> None:
            while len(got_down) < len(down):
                chunk = app.read(min(65536, len(down) - len(got_down)))
                if not chunk:
                    return
                got_down.extend(chunk)

        reader = threading.Thread(target=app_reader)
        reader.start()
        writer = threading.Thread(target=write_all, args=(device.master, down))
        writer.start()
        app.write(bytes(up))
        assert read_exactly(device.master, len(up), 60) == bytes(up)
        writer.join(60)
        reader.join(60)
        assert bytes(got_down) == down
    finally:
        app.close()
    assert "Traceback" not in hub.text()
