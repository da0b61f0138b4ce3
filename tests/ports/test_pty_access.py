"""Virtual ports other users may open: the PTY's mode, group and owner, per link and by default
(issue 14, point 4), through PtyPort and through the real client command."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from listener import Recorder
from support import Proc, comtunnel, start_client, start_hub

from comtunnel.errors import UsageError
from comtunnel.ports.pty import PtyPort
from comtunnel.protocol.settings import PortSettings
from comtunnel.specs import LinkAccess

ROOT = os.geteuid() == 0
GROUP = "dialout" if any(g.gr_name == "dialout" for g in grp.getgrall()) else grp.getgrgid(os.getgid()).gr_name

OPEN_AS_NOBODY = """
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY))
    print("opened")
except PermissionError:
    print("refused")
"""


def as_nobody(path: str) -> str:
    result = subprocess.run(
        ["/usr/bin/python3", "-c", OPEN_AS_NOBODY, path],
        user="nobody",
        capture_output=True,
        text=True,
        timeout=20,
        cwd="/",
    )
    return result.stdout.strip() or result.stderr


def test_mode_group_and_owner_are_given_to_the_pty(tmp_path: Path) -> None:
    async def main() -> None:
        access = LinkAccess(0o660, GROUP, "nobody" if ROOT else None)
        port = PtyPort(tmp_path / "dev", PortSettings(), access=access)
        await port.open(Recorder())
        try:
            st = os.stat(port.slave_path)
            assert st.st_mode & 0o777 == 0o660 and st.st_gid == grp.getgrnam(GROUP).gr_gid
            if ROOT:
                assert st.st_uid == pwd.getpwnam("nobody").pw_uid
        finally:
            await port.close()

    asyncio.run(main())


@pytest.mark.skipif(not ROOT or not Path("/usr/bin/python3").exists(), reason="needs root to try as another user")
def test_the_mode_decides_whether_another_user_may_open_it(tmp_path: Path) -> None:
    async def main() -> None:
        private = PtyPort(tmp_path / "private", PortSettings())
        shared = PtyPort(tmp_path / "shared", PortSettings(), access=LinkAccess(mode=0o666))
        await private.open(Recorder())
        await shared.open(Recorder())
        try:
            assert await asyncio.to_thread(as_nobody, private.slave_path) == "refused"
            assert await asyncio.to_thread(as_nobody, shared.slave_path) == "opened"
        finally:
            await private.close()
            await shared.close()

    asyncio.run(main())


def test_unknown_groups_and_users_are_clear_errors(tmp_path: Path) -> None:
    async def main() -> None:
        for access, message in (
            (LinkAccess(group="no-such-group"), "no group named"),
            (LinkAccess(owner="no-such-user"), "no user named"),
        ):
            with pytest.raises(UsageError, match=message):
                await PtyPort(tmp_path / "x", PortSettings(), access=access).open(Recorder())
        assert not (tmp_path / "x").exists()

    asyncio.run(main())


def test_split_and_default_link_access() -> None:
    from comtunnel.app.config import split_link_access

    rest, access = split_link_access("gps=/tmp/gps,4800,7E1,mode=0660,group=dialout")
    assert rest == "gps=/tmp/gps,4800,7E1" and access == LinkAccess(0o660, "dialout", None)
    assert LinkAccess(group="x").over(LinkAccess(0o666, "y", "z")) == LinkAccess(0o666, "x", "z")
    for bad, message in (
        ("a=/p,mode=0755", "read/write bits only"),
        ("a=/p,mode=rw", "octal"),
        ("a=/p,color=red", "unknown option"),
    ):
        with pytest.raises(UsageError, match=message):
            split_link_access(bad)


@pytest.mark.timeout(60)
def test_the_client_command_gives_links_their_access(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    hub_port = start_hub(tmp_path, certs, procs, "--port=a=loop://", "--port=b=loop://")
    client = start_client(
        tmp_path,
        certs,
        procs,
        hub_port,
        f"--link=a={tmp_path / 'a'},9600,mode=0640,group={GROUP}",
        f"--link=b={tmp_path / 'b'}",
        "--link-mode=0666",
    )
    client.wait_for(r"b: open on the hub")
    client.wait_for(r"a: open on the hub")
    a, b = os.stat(os.readlink(tmp_path / "a")), os.stat(os.readlink(tmp_path / "b"))
    assert a.st_mode & 0o777 == 0o640 and a.st_gid == grp.getgrnam(GROUP).gr_gid  # per link
    assert b.st_mode & 0o777 == 0o666  # the default
    bad = subprocess.run(
        comtunnel(
            "client", "--connect=127.0.0.1:1", f"--certs={certs}", "--name=alice", f"--link=a={tmp_path}/c,mode=9"
        ),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert bad.returncode == 2 and "mode must be octal" in bad.stderr and "Traceback" not in bad.stderr
