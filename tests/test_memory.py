"""Memory: a running hub and client never load cryptography (about 10 MiB each, issue 12 point 4).

OpenSSL checks the certificates; cryptography is for making them (`comtunnel certs`), for reading a
CRL and for explaining a file OpenSSL refused. Whether a process loaded it is read from its
memory map (cryptography's compiled ``_rust`` module), so nothing in the process is asked.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import Proc, PtyDevice, open_app_seen, read_exactly, start_client, start_hub, write_all

from comtunnel.certs import revoke


def loaded_cryptography(pid: int) -> list[str]:
    """The files of cryptography's compiled core mapped into process ``pid``."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in lines if "cryptography" in line and "_rust" in line})


@pytest.mark.timeout(60)
def test_a_hub_and_a_client_carrying_bytes_have_not_loaded_cryptography(
    certs: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    device = PtyDevice()
    try:
        port = start_hub(tmp_path, certs, procs, "-v", "--port", f"dev={device.path}")
        hub = procs[-1]
        link = tmp_path / "dev"
        client = start_client(tmp_path, certs, procs, port, "--link", f"dev={link}")
        client.wait_for("dev: open on the hub")
        app = open_app_seen(link, client, "dev")
        try:
            write_all(app, b"to the device")
            assert read_exactly(device.master, 13, timeout=10) == b"to the device"
            write_all(device.master, b"to the app")
            assert read_exactly(app, 10, timeout=10) == b"to the app"
        finally:
            os.close(app)
        hub.wait_for(r"client alice .*TLSv1\.3.*certificate 'alice'")  # -v: the session described, too
        for proc in (hub, client):
            assert proc.popen.poll() is None, proc.text()
            assert loaded_cryptography(proc.popen.pid) == [], proc.text()
    finally:
        device.close()


@pytest.mark.timeout(60)
def test_a_hub_with_a_crl_to_read_loads_it(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    """The other side of the check above: the memory map does show cryptography once it is used."""
    copy = Path(shutil.copytree(certs, tmp_path / "certs"))
    revoke(copy, "bob")
    start_hub(tmp_path, copy, procs, "--port", "a=loop://")
    assert loaded_cryptography(procs[-1].popen.pid) != []
