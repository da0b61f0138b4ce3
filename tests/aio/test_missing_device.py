"""A device that is not there is visible from the start: the hub warns, and `list` and `status` say
"missing" instead of "free" (issue 14, point 6)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import Proc, comtunnel, start_client, start_hub


def list_ports(hub_port: str, certs: Path) -> subprocess.CompletedProcess[str]:
    """`comtunnel list` against the hub, which must succeed."""
    listed = subprocess.run(
        comtunnel("list", f"--connect=127.0.0.1:{hub_port}", f"--certs={certs}", "--name=alice"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert listed.returncode == 0, listed.stderr
    return listed


@pytest.mark.timeout(60)
def test_a_missing_device_is_reported_at_start_and_in_list_and_status(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    sock = tmp_path / "hub.sock"
    hub_port = start_hub(
        tmp_path, certs, procs, "--port=gone=/dev/ttyNOPE0", "--port=ok=loop://", f"--control-socket={sock}"
    )
    procs[0].wait_for(r"port gone: /dev/ttyNOPE0 does not exist \(yet\)")
    listed = list_ports(hub_port, certs)
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "missing" in rows["gone"] and "free" in rows["ok"]
    status = subprocess.run(comtunnel("status", f"--socket={sock}"), capture_output=True, text=True, timeout=20)
    assert status.returncode == 0, status.stderr
    assert any(line.startswith("gone") and "missing" in line for line in status.stdout.splitlines())


@pytest.mark.timeout(60)
def test_a_list_is_not_logged_as_a_connection_closing(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    hub_port = start_hub(tmp_path, certs, procs, "--port=ok=loop://")
    for _ in range(2):
        list_ports(hub_port, certs)
    procs[0].wait_for(r"client alice \(127\.0\.0\.1:\d+\) disconnected[\s\S]*disconnected")
    assert "is closing the connection: 0" not in procs[0].text()


@pytest.mark.timeout(60)
def test_the_client_says_a_refusal_once_then_only_changes(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    hub_port = start_hub(tmp_path, certs, procs, "--port=gone=/dev/ttyNOPE1")
    client = start_client(tmp_path, certs, procs, hub_port, f"--link=gone={tmp_path / 'gone'}")
    client.wait_for(r"gone: cannot open: .*\(trying again every 3 s\)")
    procs[0].wait_for(r"(refused port 'gone'[\s\S]*){3}", timeout=20)  # the client asked three times...
    assert client.text().count("gone: cannot open") == 1  # ...and said so once
