"""Issue 5 access control from the CLI: access lists (full, monitor, none) and revocation without a restart."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from support import (
    Proc,
    PtyDevice,
    comtunnel,
    open_app_seen,
    read_exactly,
    start_client,
    start_hub,
    write_all,
)

from comtunnel.certs import init_certs


@pytest.fixture
def own_certs(tmp_path: Path) -> Path:
    """A CA of this test's own: revoking a client here cannot affect other tests."""
    directory = tmp_path / "certs"
    init_certs(directory, ["127.0.0.1"], ["alice", "bob"])
    return directory


def client_as(tmp: Path, certs: Path, procs: list[Proc], hub_port: str, name: str, *args: str) -> Proc:
    proc = Proc(
        tmp,
        f"client-{name}",
        "client",
        "--connect",
        f"127.0.0.1:{hub_port}",
        "--certs",
        str(certs),
        "--name",
        name,
        *args,
    )
    procs.append(proc)
    return proc


@pytest.mark.timeout(60)
def test_revoked_client_is_cut_off_within_5_s_while_others_keep_working(
    tmp_path: Path, own_certs: Path, procs: list[Proc]
) -> None:
    a, b = PtyDevice(), PtyDevice()
    try:
        hub_port = start_hub(tmp_path, own_certs, procs, f"--port=a={a.path}", f"--port=b={b.path}")
        alice = start_client(tmp_path, own_certs, procs, hub_port, f"--link=a={tmp_path / 'a'}")
        bob = client_as(tmp_path, own_certs, procs, hub_port, "bob", f"--link=b={tmp_path / 'b'}")
        alice.wait_for(r"a: open on the hub")
        bob.wait_for(r"b: open on the hub")
        app_a = open_app_seen(tmp_path / "a", alice, "a")
        revoked = subprocess.run(
            comtunnel("certs", "revoke", str(own_certs), "bob"), capture_output=True, text=True, timeout=30
        )
        assert revoked.returncode == 0, revoked.stderr
        start = time.monotonic()
        assert bob.popen.wait(10) == 3
        took = time.monotonic() - start
        assert took < 5, f"bob was cut off after {took:.1f} s"
        assert "revoked" in bob.text()
        procs[0].wait_for(r"client bob \(127\.0\.0\.1:\d+\): its certificate was revoked")
        # alice carries on, on the same hub process
        write_all(app_a, b"alice still here")
        assert read_exactly(a.master, 16, 10) == b"alice still here"
        # and bob cannot come back
        again = client_as(tmp_path, own_certs, procs, hub_port, "bob", f"--link=b={tmp_path / 'b2'}")
        assert again.popen.wait(15) == 3
        assert "is revoked" in again.text()
        procs[0].wait_for(r"refused client bob from 127\.0\.0\.1:\d+: its certificate is revoked")
        os.close(app_a)
    finally:
        a.close()
        b.close()


ACCESS = """
[access.alice]
full = ["a*"]
monitor = ["b"]

[access.bob]
full = ["b"]
"""


@pytest.mark.timeout(60)
def test_access_list_refuses_by_port_name_and_monitors_only_watch(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    a, b, secret = PtyDevice(), PtyDevice(), PtyDevice()
    config = tmp_path / "hub.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ncerts = "{certs}"\n'
        f'port = ["a1={a.path}", "b={b.path}", "secret={secret.path}"]\n' + ACCESS
    )
    try:
        hub = Proc(tmp_path, "hub", "hub", "--config", str(config))
        procs.append(hub)
        hub_port = hub.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1)
        # a port alice may not use: a clear refusal naming it, exit code 2, and nothing of its data
        refused = start_client(tmp_path, certs, procs, hub_port, f"--link=secret={tmp_path / 'secret'}", name="c1")
        assert refused.popen.wait(15) == 2
        assert "client 'alice' may not open port 'secret'" in refused.text()
        hub.wait_for(r"refused client alice \(127\.0\.0\.1:\d+\) port 'secret'")
        # bob holds b; alice watches it
        bob = client_as(tmp_path, certs, procs, hub_port, "bob", f"--link=b={tmp_path / 'b-bob'}")
        bob.wait_for(r"b: open on the hub")
        alice = start_client(tmp_path, certs, procs, hub_port, f"--link=b={tmp_path / 'b-alice'}", name="c2")
        alice.wait_for(r"b: open on the hub")
        hub.wait_for(r"client alice .* watches b \(monitor access\)")
        app_bob, app_alice = (
            open_app_seen(tmp_path / "b-bob", bob, "b"),
            open_app_seen(tmp_path / "b-alice", alice, "b"),
        )
        write_all(b.master, b"device says hi")
        assert read_exactly(app_bob, 14, 10) == b"device says hi"
        assert read_exactly(app_alice, 14, 10) == b"device says hi"
        write_all(app_alice, b"monitor writes")  # must not reach the device
        alice.wait_for(r"monitor access")
        write_all(app_bob, b"holder writes")
        assert read_exactly(b.master, 13, 10) == b"holder writes"  # and nothing of alice's before it
        for fd in (app_bob, app_alice):
            os.close(fd)
    finally:
        for device in (a, b, secret):
            device.close()
