"""Gateways on a Unix socket: its mode and group decide which local users may drive the port, and
the hub names the user who holds it (issue 13, point 10)."""

from __future__ import annotations

import asyncio
import grp
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import comtunnel, wait_for

from comtunnel.aio.hub import Hub, PortSpec
from comtunnel.errors import PortUnavailable, UsageError
from comtunnel.ports.network import NetworkServerPort
from comtunnel.ports.unixsock import UnixEndpoint, parse_endpoint
from comtunnel.specs import ServeSpec
from comtunnel.tls import hub_context

ALL_BYTES = bytes(range(256)) * 64


def unix_spec(path: Path, mode: int = 0o600, group: str | None = None, protocol: str = "raw") -> ServeSpec:
    return ServeSpec("loop", "unix", 0, protocol, unix_path=path, unix_mode=mode, unix_group=group)


def test_a_unix_gateway_carries_every_byte_and_names_its_user(certs: Path, tmp_path: Path) -> None:
    path = tmp_path / "loop.sock"
    group = grp.getgrgid(os.getgid()).gr_name

    async def main() -> None:
        hub = Hub([PortSpec("loop", "loop://")], hub_context(certs), serve=[unix_spec(path, 0o660, group)])
        await hub.start("127.0.0.1", 0)
        try:
            st = path.stat()
            assert st.st_mode & 0o777 == 0o660 and st.st_gid == os.getgid()
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(ALL_BYTES)
            assert await asyncio.wait_for(reader.readexactly(len(ALL_BYTES)), 10) == ALL_BYTES
            await wait_for(lambda: "loop" in hub.holders)
            me = f"(pid {os.getpid()})"
            assert me in hub.gateways[0].app.peer
            second_reader, second_writer = await asyncio.open_unix_connection(str(path))
            notice = await asyncio.wait_for(second_reader.read(), 5)
            assert b"is in use by" in notice and me.encode() in notice
            second_writer.close()
            writer.close()
            await wait_for(lambda: "loop" not in hub.holders)
        finally:
            await hub.close()
        assert not path.exists()  # our socket, removed

    asyncio.run(main())


PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    print("in")
except PermissionError:
    print("refused")
"""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(), reason="needs root and python3")
def test_the_socket_mode_keeps_other_users_out() -> None:
    from listener import Recorder

    directory = Path(tempfile.mkdtemp(prefix="comtunnel-unix-", dir="/tmp"))  # reachable by nobody
    os.chmod(directory, 0o755)

    def as_nobody(path: Path) -> str:
        command = ["/usr/bin/python3", "-c", PROBE, str(path)]
        result = subprocess.run(command, user="nobody", capture_output=True, text=True, timeout=20, cwd="/")
        return result.stdout.strip() or result.stderr

    async def main() -> None:
        private = NetworkServerPort("p", "unix", 0, unix=UnixEndpoint(directory / "private.sock", 0o600))
        shared = NetworkServerPort("s", "unix", 0, unix=UnixEndpoint(directory / "shared.sock", 0o666))
        await private.open(Recorder())
        await shared.open(Recorder())
        try:
            assert await asyncio.to_thread(as_nobody, directory / "private.sock") == "refused"
            assert await asyncio.to_thread(as_nobody, directory / "shared.sock") == "in"  # the same path works
        finally:
            await private.close()
            await shared.close()

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_stale_sockets_are_replaced_and_live_ones_or_files_refused(tmp_path: Path) -> None:
    from listener import Recorder

    stale = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # the file stays, nobody listens: what a killed hub leaves
    live = tmp_path / "live.sock"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(live))
    holder.listen()
    plain = tmp_path / "file.sock"
    plain.write_text("not a socket")

    async def main() -> None:
        port = NetworkServerPort("p", "unix", 0, unix=UnixEndpoint(stale))
        await port.open(Recorder())
        await port.close()
        for path, message in ((live, "another process is serving it"), (plain, "not a socket")):
            with pytest.raises(PortUnavailable, match=message):
                await NetworkServerPort("p", "unix", 0, unix=UnixEndpoint(path)).open(Recorder())

    try:
        asyncio.run(main())
    finally:
        holder.close()
    assert plain.read_text() == "not a socket" and live.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unix:", "expected unix:PATH"),
        ("unix:/x,mode=999", "mode must be octal"),
        ("unix:/x,mode=0755", "read/write bits only"),
        ("unix:/x,owner=me", "unknown option 'owner'"),
    ],
)
def test_bad_endpoints_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_endpoint(text)


@pytest.mark.timeout(30)
def test_the_cli_refuses_an_unknown_group(tmp_path: Path, certs: Path) -> None:
    result = subprocess.run(
        comtunnel(
            "hub",
            "--listen=127.0.0.1:0",
            f"--certs={certs}",
            "--port=a=loop://",
            f"--raw=a=unix:{tmp_path}/a.sock,mode=0660,group=no-such-group-here",
            "--control-socket=none",
        ),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert "no group named 'no-such-group-here'" in result.stderr and "Traceback" not in result.stderr
