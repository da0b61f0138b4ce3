"""pyserial's own rfc2217:// client against both of our server roles, driven through the CLI."""

from __future__ import annotations

import random
import termios
import threading
import time
from pathlib import Path

import pytest
import serial
from support import Proc, PtyDevice, read_exactly, start_client, start_hub

MiB = 1 << 20


def _start_hub(tmp_path: Path, certs: Path, procs: list[Proc], *extra: str) -> str:
    return start_hub(tmp_path, certs, procs, "--port", "loop=loop://", *extra)


def _rfc2217_port(proc: Proc) -> int:
    return int(proc.wait_for(r"loop: RFC 2217 server on 127\.0\.0\.1:(\d+)").group(1))


def _exercise(port: int) -> None:
    """What the acceptance asks: settings accepted, DTR/RTS read back, 1 MiB intact."""
    s = serial.serial_for_url(f"rfc2217://127.0.0.1:{port}", baudrate=115200, timeout=5)
    try:
        for baud in (9600, 57600, 921600, 250000):
            s.baudrate = baud  # raises if the server does not acknowledge
        s.bytesize, s.parity, s.stopbits = serial.SEVENBITS, serial.PARITY_EVEN, serial.STOPBITS_TWO
        s.bytesize, s.parity, s.stopbits = serial.EIGHTBITS, serial.PARITY_NONE, serial.STOPBITS_ONE
        for dtr, rts in ((False, False), (True, False), (False, True), (True, True)):
            s.dtr, s.rts = dtr, rts
            start = time.monotonic()
            while (s.dsr, s.cts) != (dtr, rts):
                assert time.monotonic() - start < 0.1, f"DSR/CTS did not follow DTR={dtr} RTS={rts} in 100 ms"
                time.sleep(0.002)
        s.send_break(0.05)
        s.reset_input_buffer()
        data = bytearray(random.Random(7).randbytes(MiB - 256))
        data[100:100] = bytes(range(256))
        received = bytearray()

        def reader() -> None:
            while len(received) < len(data):
                chunk = s.read(min(65536, len(data) - len(received)))
                if not chunk:
                    break
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(0, len(data), 16384):
            s.write(data[i : i + 16384])
        thread.join(60)
        assert bytes(received) == bytes(data)
    finally:
        s.close()


@pytest.mark.timeout(120)
def test_pyserial_through_client_rfc2217_over_the_tunnel(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    port = _start_hub(tmp_path, certs, procs)
    client = start_client(tmp_path, certs, procs, port, "--rfc2217", "loop=127.0.0.1:0")
    client.wait_for("loop: open on the hub")
    _exercise(_rfc2217_port(client))
    _exercise(_rfc2217_port(client))  # one after another, each from a clean state
    assert "Traceback" not in client.text()


@pytest.mark.timeout(60)
def test_pyserial_settings_reach_the_device_through_the_tunnel(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    try:
        port = _start_hub(tmp_path, certs, procs, "--port", f"dev={device.path}")
        client = start_client(tmp_path, certs, procs, port, "--rfc2217", "dev=127.0.0.1:0")
        client.wait_for("dev: open on the hub")
        tcp = int(client.wait_for(r"dev: RFC 2217 server on 127\.0\.0\.1:(\d+)").group(1))
        s = serial.serial_for_url(f"rfc2217://127.0.0.1:{tcp}?ign_set_control", baudrate=115200, timeout=5)
        try:
            s.baudrate = 57600
            s.stopbits = serial.STOPBITS_TWO
            deadline = time.monotonic() + 5
            while not (
                termios.tcgetattr(device.slave)[5] == termios.B57600
                and termios.tcgetattr(device.slave)[2] & termios.CSTOPB
            ):
                assert time.monotonic() < deadline, "the device never got 57600 8N2"
                time.sleep(0.01)
            s.write(b"\xff\x00\x11\x13\r\n")
            assert read_exactly(device.master, 6, 5) == b"\xff\x00\x11\x13\r\n"
        finally:
            s.close()
        assert "has no DTR" in client.text() or "no DTR" in procs[0].text()  # a PTY device says so, once
    finally:
        device.close()


@pytest.mark.timeout(120)
def test_pyserial_against_hub_rfc2217_and_busy_refusal(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    _start_hub(tmp_path, certs, procs, "--rfc2217", "loop=127.0.0.1:0")
    hub = procs[0]
    port = _rfc2217_port(hub)
    _exercise(port)
    first = serial.serial_for_url(f"rfc2217://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises((serial.SerialException, OSError)):
            serial.serial_for_url(f"rfc2217://127.0.0.1:{port}", timeout=2)  # refused while one is active
        assert "refused a second RFC 2217 connection" in hub.text()
    finally:
        first.close()
    time.sleep(0.2)
    _exercise(port)  # after the first leaves, a new one works
