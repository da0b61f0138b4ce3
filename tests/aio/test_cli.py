"""The scenario driven only by the CLI, as a user runs it: certs init, hub, client, an application."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from support import Proc, PtyDevice, comtunnel, open_app, read_exactly, start_client, start_hub, write_all


@pytest.mark.timeout(90)
def test_cli_scenario(tmp_path: Path, procs: list[Proc]) -> None:
    certs = tmp_path / "certs"
    subprocess.run(
        comtunnel("certs", "init", str(certs), "--hub-name", "127.0.0.1", "--client", "alice"),
        check=True,
        capture_output=True,
        timeout=30,
    )
    subprocess.run(comtunnel("certs", "client", str(certs), "bob"), check=True, capture_output=True, timeout=30)
    for key in ("ca.key", "hub.key", "alice.key", "bob.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600

    device = PtyDevice()
    try:
        port = start_hub(tmp_path, certs, procs, "--port", f"dev={device.path}", "--port", "loop=loop://")
        hub = procs[-1]
        link = tmp_path / "ports" / "dev"
        client = start_client(tmp_path, certs, procs, port, "--link", f"dev={link},115200,8N1")
        client.wait_for(r"dev: open on the hub")
        assert link.is_symlink()

        app = open_app(link)
        try:
            time.sleep(0.2)
            message = b"hello device \x00\xff\x11\x13\r\n"
            write_all(app, message)
            assert read_exactly(device.master, len(message), 10) == message
            write_all(device.master, b"hello app\r\n")
            assert read_exactly(app, 11, 10) == b"hello app\r\n"
        finally:
            os.close(app)
        hub.wait_for(r"client alice connected from 127\.0\.0\.1")

        # `list` shows each port, who holds it, and the line settings in effect.
        listing = subprocess.run(
            comtunnel("list", "--connect", f"127.0.0.1:{port}", "--certs", str(certs), "--name", "bob"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listing.returncode == 0, listing.stderr
        rows = [line.split() for line in listing.stdout.splitlines()]
        assert rows[0] == ["PORT", "DEVICE", "STATE", "HELD", "BY", "SETTINGS"]
        assert ["dev", device.path, "in", "use", "alice", "115200,8N1"] in rows
        assert ["loop", "loop://", "free", "-", "-"] in rows

        # An unknown port name: the client says so and exits with the usage code.
        bad = subprocess.run(
            comtunnel(
                "client",
                "--connect",
                f"127.0.0.1:{port}",
                "--certs",
                str(certs),
                "--name",
                "bob",
                "--link",
                f"nope={tmp_path / 'nope'}",
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 2, bad.stderr
        assert "no port named 'nope'" in bad.stderr and "Traceback" not in bad.stderr

        assert client.stop() == 130  # Ctrl-C: interrupted
        assert not link.exists(), "the symlink is removed on exit"
        assert hub.popen.poll() is None, "the hub keeps running after clients leave"
        assert hub.stop() == 130
        assert "Traceback" not in hub.text() + client.text()
    finally:
        device.close()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["hub", "--listen", "127.0.0.1:0", "--certs", str(tmp_path / "none"), "--port", "a=loop://"], "certs"),
        (["hub", "--listen", "nonsense", "--certs", str(tmp_path), "--port", "a=loop://"], "HOST:PORT"),
        (["client", "--connect", "127.0.0.1:1", "--certs", str(tmp_path), "--name", "x", "--link", "bad"], "NAME="),
        (["certs", "init", str(tmp_path / "c"), "--hub-name", "h", "--client", "../evil"], "evil"),
    ]
    for args, expected in cases:
        result = subprocess.run(comtunnel(*args), capture_output=True, text=True, timeout=30)
        assert result.returncode in (2, 3), (args, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
