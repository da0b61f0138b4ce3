"""What the command line tells a user (issue 14, points 9 and 11): -v and -vv, after the command
too; `status --watch` refreshing in place; `list --local` finding the virtual ports of the clients
running here. All through the real executable."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import Proc, comtunnel, start_client, start_hub


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(comtunnel(*args), capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.timeout(60)
def test_verbosity_levels_and_their_place(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    hub_port = start_hub(tmp_path, certs, procs, "--port=a=loop://")
    where = (f"--connect=127.0.0.1:{hub_port}", f"--certs={certs}", "--name=alice")
    quiet = run("list", *where)
    assert quiet.returncode == 0 and "DETAIL" not in quiet.stderr and "DEBUG" not in quiet.stderr
    detail = run("list", *where, "-v")  # after the command
    assert detail.returncode == 0, detail.stderr
    assert f"DETAIL  connecting to hub 127.0.0.1:{hub_port}" in detail.stderr
    assert "TLSv1.3" in detail.stderr and "certificate '127.0.0.1'" in detail.stderr and "DEBUG" not in detail.stderr
    debug = run("-v", "list", *where, "-v")  # before and after add up
    assert "DEBUG" in debug.stderr and "HandshakeComplete" in debug.stderr and "PortsUpdated" in debug.stderr
    assert "comtunnel: error" not in debug.stderr


@pytest.mark.timeout(60)
def test_status_watch_refreshes_in_place_until_ctrl_c(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    sock = tmp_path / "hub.sock"
    start_hub(tmp_path, certs, procs, "--port=a=loop://", f"--control-socket={sock}")
    master, slave = os.openpty()
    watch = subprocess.Popen(comtunnel("status", f"--socket={sock}", "--watch", "0.2"), stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 10
        while out.count(b"\x1b[H\x1b[2J") < 3 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(5) == 130
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5)
        os.close(master)
    assert out.count(b"\x1b[H\x1b[2J") >= 3  # each refresh clears the screen and starts at the top
    assert b"SETTINGS" in out and b"Traceback" not in out


@pytest.mark.timeout(60)
def test_list_local_shows_the_clients_links(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    hub_port = start_hub(tmp_path, certs, procs, "--port=a=loop://", "--port=b=loop://")
    client = start_client(tmp_path, certs, procs, hub_port, f"--link=a={tmp_path / 'a'},9600,7E1")
    client.wait_for(r"a: open on the hub")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(client.runtime_dir)}
    listed = run("list", "--local", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["LINK", "PTY", "HUB", "PORT", "STATE", "SETTINGS", "APP"]
    (row,) = rows
    assert str(tmp_path / "a") in row and "/dev/pts/" in row and " a " in row and "open" in row and "9600,7E1" in row
    nobody_here = run("list", "--local", env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "empty")})
    assert nobody_here.returncode == 0 and "no comtunnel client is running here" in nobody_here.stdout
    incomplete = run("list", "--certs", str(certs))
    assert incomplete.returncode == 2 and "list needs --connect, --name" in incomplete.stderr
