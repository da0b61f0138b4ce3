"""Operations from the CLI: `comtunnel status` over the control socket, Prometheus metrics, --port auto."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from support import (
    Proc,
    PtyDevice,
    comtunnel,
    open_app,
    open_app_seen,
    read_exactly,
    start_client,
    start_hub,
    write_all,
)

from comtunnel.aio.control import start_control_server
from comtunnel.errors import UsageError
from comtunnel.ports.discovery import PortWatcher, scan


def status(hub: Proc, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(hub.runtime_dir)}  # as the hub's user would have it
    return subprocess.run(comtunnel("status", *args), capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.timeout(60)
def test_status_shows_sessions_channels_bytes_and_rates(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    try:
        hub_port = start_hub(tmp_path, certs, procs, f"--port=gps={device.path}", "--port=spare=loop://")
        hub = procs[0]
        hub.wait_for(r"status: comtunnel status --socket")
        sock = hub.runtime_dir / "comtunnel" / "hub.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        client = start_client(tmp_path, certs, procs, hub_port, f"--link=gps={tmp_path / 'gps'}")
        client.wait_for(r"gps: open on the hub")
        app = open_app(tmp_path / "gps")
        write_all(app, b"x" * 5000)
        assert read_exactly(device.master, 5000, 10) == b"x" * 5000
        result = status(hub)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "1 session(s)" in out
        assert "gps" in out and "in use by alice" in out and "spare" in out and "free" in out
        assert "alice" in out and "5.0 kB" in out
        doc = json.loads(status(hub, "--json").stdout)
        (session,) = doc["sessions"]
        assert session["client"] == "alice" and session["channels"][0]["bytes_to_device"] == 5000
        os.close(app)
    finally:
        device.close()


def test_status_without_a_hub_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        comtunnel("status", "--socket", str(tmp_path / "none.sock")), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 4
    assert f"no hub is running here (no control socket {tmp_path / 'none.sock'})" in result.stderr


@pytest.mark.timeout(60)
def test_second_hub_on_the_same_control_socket_is_refused(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    sock = tmp_path / "ctl" / "hub.sock"
    start_hub(tmp_path, certs, procs, "--port=a=loop://", f"--control-socket={sock}")
    second = Proc(
        tmp_path,
        "hub2",
        "hub",
        "--listen",
        "127.0.0.1:0",
        "--certs",
        str(certs),
        "--port=a=loop://",
        f"--control-socket={sock}",
    )
    procs.append(second)
    assert second.popen.wait(15) == 2
    assert f"another hub is running with control socket {sock}" in second.text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_prometheus_metrics_from_a_running_hub(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    pytest.importorskip("prometheus_client")
    metrics = free_port()
    device = PtyDevice()
    try:
        hub_port = start_hub(tmp_path, certs, procs, f"--port=gps={device.path}", f"--metrics=127.0.0.1:{metrics}")
        client = start_client(tmp_path, certs, procs, hub_port, f"--link=gps={tmp_path / 'gps'}")
        client.wait_for(r"gps: open on the hub")
        app = open_app_seen(tmp_path / "gps", client, "gps")
        write_all(device.master, b"y" * 1234)
        assert read_exactly(app, 1234, 10) == b"y" * 1234
        time.sleep(1.5)  # the snapshot is refreshed every second
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
        assert 'comtunnel_sessions{state="connected"} 1.0' in text
        assert 'comtunnel_port_in_use{port="gps"} 1.0' in text
        assert 'comtunnel_port_bytes_total{client="alice",direction="from_device",port="gps"} 1234.0' in text
        os.close(app)
    finally:
        device.close()


def test_metrics_on_a_public_address_needs_allow_remote(tmp_path: Path, certs: Path) -> None:
    result = subprocess.run(
        comtunnel("hub", "--listen", "127.0.0.1:0", "--certs", str(certs), "--port=a=loop://", "--metrics=0.0.0.0:9"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--metrics on 0.0.0.0 would be plaintext" in result.stderr


def test_discovery_names_ports_by_id_and_follows_hotplug(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    one, two = PtyDevice(), PtyDevice()
    try:
        (by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0").symlink_to(one.path)
        listed = [one.path, "/dev/ttyS0"]
        watcher = PortWatcher(by_id, lambda: listed)
        assert watcher.ports == {
            "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0": str(by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"),
            "ttyS0": "/dev/ttyS0",
        }
        (by_id / "usb-Arduino__www.arduino.cc__0043_7563-if00").symlink_to(two.path)
        listed.append(two.path)
        added, removed = watcher.poll()
        assert added == {
            "usb-Arduino__www.arduino.cc__0043_7563-if00": str(by_id / "usb-Arduino__www.arduino.cc__0043_7563-if00")
        }
        assert removed == set()
        (by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0").unlink()
        listed.remove(one.path)
        assert watcher.poll() == ({}, {"usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"})
        assert scan(tmp_path / "missing", lambda: ["/dev/ttyUSB0", "/dev/weird name!"]) == {
            "ttyUSB0": "/dev/ttyUSB0",
            "weird_name": "/dev/weird name!",
        }
    finally:
        one.close()
        two.close()


@pytest.mark.timeout(60)
def test_hub_with_port_auto_starts_and_is_listed(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    """On this machine there may be no serial ports at all: the hub must still start and say so."""
    start_hub(tmp_path, certs, procs, "--port=auto", "--port=extra=loop://")
    procs[0].wait_for(r"--port auto: ")


def test_control_socket_refuses_a_directory_of_another_user(tmp_path: Path) -> None:
    """A control socket in a directory someone else made (a /tmp squatter) could be read or swapped."""
    squatted = tmp_path / "squatted"
    squatted.mkdir(mode=0o777)
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:
        os.chown(squatted, nobody.pw_uid, nobody.pw_gid)
    elif squatted.stat().st_uid == os.geteuid():
        squatted = Path("/")  # owned by root: the same situation for a normal user
    with pytest.raises(UsageError, match="belongs to another user"):
        asyncio.run(start_control_server(squatted / "hub.sock", dict))


@pytest.mark.parametrize(("mode", "who"), [(0o1777, "every user"), (0o777, "every user"), (0o770, "its group")])
def test_control_socket_never_chmods_a_shared_directory(tmp_path: Path, mode: int, who: str) -> None:
    """``--control-socket /tmp/hub.sock`` as root once left /tmp 0700: nobody else could use it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    with pytest.raises(UsageError, match=f"writable by {who}, who could replace the control socket"):
        asyncio.run(start_control_server(shared / "hub.sock", dict))
    assert shared.stat().st_mode & 0o7777 == mode
    assert list(shared.iterdir()) == []


def test_control_socket_uses_an_existing_private_directory_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    os.chmod(own, 0o755)
    made = tmp_path / "made" / "deeper"

    async def main() -> None:
        for directory in (own, made):
            server = await start_control_server(directory / "hub.sock", dict)
            try:
                assert (directory / "hub.sock").stat().st_mode & 0o777 == 0o600
                if directory is made:
                    assert made.stat().st_mode & 0o777 == 0o700 and (tmp_path / "made").stat().st_mode & 0o777 == 0o700
            finally:
                await server.close()

    asyncio.run(main())
    assert own.stat().st_mode & 0o777 == 0o755 and own.exists()  # untouched, and kept
    assert not (tmp_path / "made").exists()  # what the hub made is not left behind


@pytest.mark.timeout(30)
def test_hub_refuses_a_control_socket_in_a_shared_directory(tmp_path: Path, certs: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    result = subprocess.run(
        comtunnel(
            "hub", "--listen=127.0.0.1:0", f"--certs={certs}", "--port=a=loop://", f"--control-socket={shared}/h.sock"
        ),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert f"{shared} is writable by every user" in result.stderr and "Traceback" not in result.stderr
    assert shared.stat().st_mode & 0o7777 == 0o1777
