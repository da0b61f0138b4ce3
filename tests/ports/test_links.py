"""Virtual-port links: made only where they may be, never over what another process uses, and
removed at exit only while they are still ours."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from listener import Recorder

from comtunnel.errors import UsageError
from comtunnel.ports import links
from comtunnel.ports.pty import PtyPort
from comtunnel.protocol.settings import PortSettings


def test_a_live_link_of_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    master, slave = os.openpty()
    holder = subprocess.Popen(["sleep", "30"], stdin=slave)
    os.close(slave)
    link = tmp_path / "ttyA"
    target = os.readlink(f"/proc/{holder.pid}/fd/0")  # the slave, which only the holder has open now
    link.symlink_to(target)
    try:

        async def main() -> None:
            with pytest.raises(UsageError) as info:
                await PtyPort(link, PortSettings()).open(Recorder())
            message = str(info.value)
            assert f"{link} already points at {target}" in message
            assert f"sleep (pid {holder.pid})" in message
            assert "refusing to take it over" in message

        fds = len(os.listdir("/proc/self/fd"))
        asyncio.run(main())
        assert len(os.listdir("/proc/self/fd")) == fds  # the refused port left no PTY open
        assert os.readlink(link) == target  # untouched
    finally:
        holder.kill()
        holder.wait(5)
        os.close(master)


def test_a_link_to_a_real_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "device"
    other.write_text("not a pty")
    link = tmp_path / "ttyB"
    link.symlink_to(other)

    async def main() -> None:
        with pytest.raises(UsageError, match="already points at"):
            await PtyPort(link, PortSettings()).open(Recorder())

    asyncio.run(main())
    assert os.readlink(link) == str(other) and other.read_text() == "not a pty"


def test_a_stale_link_is_replaced_and_made_directories_are_removed(tmp_path: Path) -> None:
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "keep").write_text("x")
    stale = existing / "ttyS"
    stale.symlink_to("/dev/pts/99999")
    nested = tmp_path / "made" / "deeper" / "ttyN"

    async def main() -> None:
        first, second = PtyPort(stale, PortSettings()), PtyPort(nested, PortSettings())
        await first.open(Recorder())
        await second.open(Recorder())
        try:
            assert os.readlink(stale) == first.slave_path
            assert os.readlink(nested) == second.slave_path
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
    assert not os.path.lexists(stale) and (existing / "keep").exists()  # a directory we did not make stays
    assert not (tmp_path / "made").exists()


def test_a_link_someone_else_replaced_is_left_alone_at_exit(tmp_path: Path) -> None:
    link = tmp_path / "dir" / "ttyC"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")

    async def main() -> None:
        port = PtyPort(link, PortSettings())
        await port.open(Recorder())
        link.unlink()
        link.symlink_to(elsewhere)  # another program took the path meanwhile
        await port.close()

    asyncio.run(main())
    assert os.readlink(link) == str(elsewhere)
    assert link.parent.exists()  # not empty: kept


def test_holders_finds_a_process_by_its_open_file(tmp_path: Path) -> None:
    path = tmp_path / "held"
    path.write_text("")
    with path.open() as f:
        holder = subprocess.Popen(["sleep", "30"], stdin=f)
    try:
        assert (holder.pid, "sleep") in links.holders(str(path))
        assert links.holders(str(tmp_path / "nobody")) == []
    finally:
        holder.kill()
        holder.wait(5)


def test_a_dangling_link_that_is_not_a_pty_is_someone_elses(tmp_path: Path) -> None:
    link = tmp_path / "gps"
    link.symlink_to("/dev/ttyUSB-unplugged")

    async def main() -> None:
        with pytest.raises(UsageError, match="points at /dev/ttyUSB-unplugged, which does not exist now"):
            await PtyPort(link, PortSettings()).open(Recorder())

    asyncio.run(main())
    assert os.readlink(link) == "/dev/ttyUSB-unplugged"
