"""labgrid's own NetworkSerialPort and SerialDriver against both of our RFC 2217 server roles.

labgrid depends on pyserial-labgrid, a fork that replaces pyserial, so it runs in a venv of its
own (``.venv-labgrid``) as a subprocess: ``labgrid_probe.py`` imports labgrid only. The probe
opens ``rfc2217://host:port?ign_set_control`` as labgrid does, which purges at the open and sets a
timeout before every read. It exchanges all 256 byte values, changes the baud rate on the open
port and by reopening at a new ``speed``, and sends a BREAK.

The device is an RFC 2217 access server of ours, in this process, in ser2net's place: the hub
takes it as ``rfc2217://``. A PTY device would show the baud rate but not a BREAK, which is a
no-op on a PTY (notes/pty.md). The server reports every request that reaches it, so the test
checks on the device side that the bytes, the two baud rates and the BREAK arrived.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Proc, start_client, start_hub

from comtunnel.errors import PortError
from comtunnel.ports.rfc2217_server import Rfc2217ServerPort
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("labgrid_probe.py")
MAKE_VENV = "python3 -m venv .venv-labgrid && .venv-labgrid/bin/pip install -q labgrid"
SENT = bytes(range(256))
NEW_SPEED, REOPEN_SPEED = 57600, 230400


@pytest.fixture
def labgrid_python() -> Path:
    """$COMTUNNEL_LABGRID_PYTHON, else the repo's .venv-labgrid; missing is a failure in CI only."""
    configured = os.environ.get("COMTUNNEL_LABGRID_PYTHON")
    python = Path(configured) if configured else ROOT / ".venv-labgrid" / "bin" / "python"
    if not python.exists():
        message = f"labgrid's python {python} is missing; make it at the repository root with: {MAKE_VENV}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


class RecordingDevice:
    """The device: an Rfc2217ServerPort on a loop in a thread of its own; the hub is its client.

    It answers each 256 bytes it receives with the same values reversed, and records the baud
    rates, BREAK changes and purges that reach it.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.bauds: list[int] = []
        self.breaks: list[bool] = []
        self.purges: list[Purge] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="device", daemon=True)
        self._thread.start()
        self._port = Rfc2217ServerPort("device", "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(self._port.open(self), self._loop).result(5)
        assert self._port.address is not None
        self.url = f"rfc2217://127.0.0.1:{self._port.address[1]}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._port.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def port_data(self, data: bytes) -> None:
        before = len(self.received) // len(SENT)
        self.received += data
        for _ in range(before, len(self.received) // len(SENT)):
            self._port.write(SENT[::-1])

    def app_settings(self, settings: PortSettings) -> None:
        if not self.bauds or self.bauds[-1] != settings.baudrate:
            self.bauds.append(settings.baudrate)

    def app_control(self, request: ControlRequest) -> None:
        if request.break_ is not None:
            self.breaks.append(request.break_)

    def app_purge(self, which: Purge) -> None:
        self.purges.append(which)

    def port_drained(self) -> None:
        pass

    def port_modem(self, lines: ModemLines) -> None:
        pass

    def port_flow(self, stopped: bool) -> None:
        pass

    def port_lost(self, exc: PortError | None) -> None:
        pass

    def app_open(self, is_open: bool) -> None:
        pass


@pytest.fixture
def device() -> Iterator[RecordingDevice]:
    dev = RecordingDevice()
    yield dev
    dev.close()


def _until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _run_probe(python: Path, tmp_path: Path, tcp: int) -> None:
    """labgrid's SerialDriver on a NetworkSerialPort at 127.0.0.1:tcp, configured by an env YAML."""
    config = tmp_path / "env.yaml"
    config.write_text(
        "targets:\n"
        "  main:\n"
        "    resources:\n"
        "      NetworkSerialPort:\n"
        "        host: 127.0.0.1\n"
        f"        port: {tcp}\n"
        "        speed: 115200\n"
        "    drivers:\n"
        "      SerialDriver: {}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # labgrid's venv only
    done = subprocess.run(
        [str(python), str(PROBE), str(config), str(NEW_SPEED), str(REOPEN_SPEED)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), f"labgrid probe failed:\n{done.stdout}\n{done.stderr}"


def _check_device(device: RecordingDevice) -> None:
    _until(lambda: device.breaks == [True, False], f"the device saw BREAK changes {device.breaks}, not on then off")
    assert bytes(device.received) == SENT * 3  # every byte value, once per exchange, nothing else
    assert device.bauds[-2:] == [NEW_SPEED, REOPEN_SPEED], f"the device saw baud rates {device.bauds}"
    assert device.purges == [Purge.RECEIVE, Purge.TRANSMIT] * 2  # each of labgrid's opens purges both ways


def _assert_clean(*procs: Proc) -> None:
    """Every request was acknowledged and applied: no warning (an unanswered request is one), no traceback."""
    for proc in procs:
        text = proc.text()
        assert "WARNING" not in text and "Traceback" not in text, text


@pytest.mark.timeout(60)
def test_labgrid_through_client_rfc2217_over_the_tunnel(
    certs: Path, tmp_path: Path, procs: list[Proc], labgrid_python: Path, device: RecordingDevice
) -> None:
    port = start_hub(tmp_path, certs, procs, "--port", f"dev={device.url}")
    client = start_client(tmp_path, certs, procs, port, "--rfc2217", "dev=127.0.0.1:0")
    client.wait_for("dev: open on the hub")
    tcp = int(client.wait_for(r"dev: RFC 2217 server on 127\.0\.0\.1:(\d+)").group(1))
    _run_probe(labgrid_python, tmp_path, tcp)
    _check_device(device)
    _assert_clean(client, procs[0])


@pytest.mark.timeout(60)
def test_labgrid_against_hub_rfc2217(
    certs: Path, tmp_path: Path, procs: list[Proc], labgrid_python: Path, device: RecordingDevice
) -> None:
    start_hub(tmp_path, certs, procs, "--port", f"dev={device.url}", "--rfc2217", "dev=127.0.0.1:0")
    tcp = int(procs[0].wait_for(r"dev: RFC 2217 server on 127\.0\.0\.1:(\d+)").group(1))
    _run_probe(labgrid_python, tmp_path, tcp)
    _check_device(device)
    _assert_clean(procs[0])
