"""The PTY virtual port, driven by a real application-side fd / pyserial, as an application would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
from pathlib import Path

import pytest
import serial
from listener import Recorder
from support import open_app, read_exactly, wait_for, write_all

from comtunnel.errors import UsageError
from comtunnel.ports import termios2
from comtunnel.ports.pty import PtyPort
from comtunnel.protocol.settings import PortSettings, Purge, StopBits


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_link_lifecycle_and_reopen(tmp_path: Path) -> None:
    link = tmp_path / "sub" / "dev"
    stale = tmp_path / "stale"
    stale.symlink_to("/dev/pts/nonexistent")

    async def main() -> None:
        rec = Recorder()
        port = PtyPort(link, PortSettings(9600))
        await port.open(rec)
        second = PtyPort(stale, PortSettings(9600))
        await second.open(Recorder())
        try:
            assert os.readlink(link) == port.slave_path and os.readlink(stale) == second.slave_path
            for _ in range(3):  # the app opens and closes; the link stays valid
                fd = open_app(link)
                await wait_for(lambda: port.app_is_open)
                os.close(fd)
                await wait_for(lambda: not port.app_is_open)
            assert rec.opens == [True, False] * 3
        finally:
            await port.close()
            await second.close()
        assert not link.exists() and not stale.exists()

    run(main)


def inotify_fds() -> int:
    """inotify instances this process holds (each is one of the user's 128, by default)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            count += "inotify" in os.readlink(f"/proc/self/fd/{fd}")
    return count


def test_ports_share_one_inotify_instance_and_each_sees_its_own_app(tmp_path: Path) -> None:
    """150 ports: more than Linux's default 128 instances per user; one instance, one fd, for all."""

    async def main() -> None:
        before = inotify_fds()
        recs = [Recorder() for _ in range(150)]
        ports = [PtyPort(tmp_path / f"p{i}", PortSettings(9600)) for i in range(150)]
        try:
            for port, rec in zip(ports, recs, strict=True):
                await port.open(rec)
            assert inotify_fds() == before + 1
            fd = open_app(tmp_path / "p7")
            await wait_for(lambda: ports[7].app_is_open)
            os.close(fd)
            await wait_for(lambda: not ports[7].app_is_open)
            assert recs[7].opens == [True, False]
            assert all(not rec.opens for i, rec in enumerate(recs) if i != 7)
            await ports[7].close()
            fd = open_app(tmp_path / "p8")  # the others still see their apps once one port has gone
            await wait_for(lambda: ports[8].app_is_open)
            os.close(fd)
        finally:
            for port in ports:
                await port.close()
        assert inotify_fds() == before  # the last port closed it

    run(main)


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "precious"
    path.write_text("keep me")

    async def main() -> None:
        with pytest.raises(UsageError, match="not a symlink"):
            await PtyPort(path, PortSettings()).open(Recorder())

    run(main)
    assert path.read_text() == "keep me"


def test_all_bytes_both_ways_and_drops_while_closed(tmp_path: Path) -> None:
    link = tmp_path / "dev"
    payload = os.urandom(1 << 20) + bytes(range(256))

    async def main() -> None:
        rec = Recorder()
        port = PtyPort(link, PortSettings(115200))
        await port.open(rec)
        try:
            port.write(b"nobody listens")
            assert port.dropped_bytes == 14
            fd = open_app(link)
            await wait_for(lambda: port.app_is_open)
            await asyncio.to_thread(write_all, fd, payload)
            await wait_for(lambda: len(rec.data) >= len(payload), 20)
            assert bytes(rec.data) == payload
            reader = asyncio.ensure_future(asyncio.to_thread(read_exactly, fd, len(payload)))
            for i in range(0, len(payload), 65536):
                port.write(payload[i : i + 65536])
                await asyncio.sleep(0)
            assert await reader == payload
            await wait_for(lambda: port.write_buffer_size == 0)
            assert rec.lost == []
            os.close(fd)
        finally:
            await port.close()

    run(main)


def test_termios_changes_arrive_within_50_ms(tmp_path: Path) -> None:
    link = tmp_path / "dev"

    async def main() -> None:
        rec = Recorder()
        port = PtyPort(link, PortSettings(9600, bytesize=7, parity="E"))  # type: ignore[arg-type]
        await port.open(rec)
        try:
            app = serial.Serial(str(link), 9600)
            await wait_for(lambda: port.app_is_open)
            delays = []
            for change in (
                {"baudrate": 115200},
                {"baudrate": 250000},
                {"baudrate": 12_000_000},
                {"stopbits": serial.STOPBITS_TWO},
                {"rtscts": True},
                {"xonxoff": True},
            ):
                before = len(rec.settings)
                start = time.monotonic()
                for key, value in change.items():
                    setattr(app, key, value)
                await wait_for(lambda b=before: len(rec.settings) > b, 1.0, 0.001)  # type: ignore[misc]
                delays.append(rec.settings_at[-1] - start)
            last = rec.settings[-1]
            assert last.baudrate == 12_000_000 and last.stopbits is StopBits.TWO and last.rtscts and last.xonxoff
            assert (last.bytesize, last.parity.value) == (7, "E")  # from the link: a PTY cannot hold them
            assert max(delays) < 0.05, delays
            app.close()
        finally:
            await port.close()

    run(main)


def test_flushes_become_purges_and_apply_settings_is_visible(tmp_path: Path) -> None:
    link = tmp_path / "dev"

    async def main() -> None:
        rec = Recorder()
        port = PtyPort(link, PortSettings(9600))
        await port.open(rec)
        try:
            fd = open_app(link)
            await wait_for(lambda: port.app_is_open)
            termios.tcflush(fd, termios.TCIFLUSH)
            await wait_for(lambda: Purge.RECEIVE in rec.purges)
            termios.tcflush(fd, termios.TCOFLUSH)
            await wait_for(lambda: Purge.TRANSMIT in rec.purges)
            count = len(rec.settings)
            await port.apply_settings(PortSettings(460800, stopbits=StopBits.TWO))
            assert termios2.get(fd).baudrate == 460800
            await asyncio.sleep(0.05)
            assert len(rec.settings) == count, "our own change must not come back as the app's"
            os.close(fd)
        finally:
            await port.close()

    run(main)


def test_pause_reading_leaves_data_in_the_pty(tmp_path: Path) -> None:
    link = tmp_path / "dev"

    async def main() -> None:
        rec = Recorder()
        port = PtyPort(link, PortSettings(9600))
        await port.open(rec)
        try:
            fd = open_app(link)
            await wait_for(lambda: port.app_is_open)
            port.pause_reading()
            os.write(fd, b"held")
            await asyncio.sleep(0.1)
            assert rec.data == b""
            port.resume_reading()
            await wait_for(lambda: rec.data == b"held")
            os.close(fd)
        finally:
            await port.close()

    run(main)
