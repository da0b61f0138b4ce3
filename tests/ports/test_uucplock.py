"""The device is ours alone while open: a UUCP lock file that ser2net, minicom and picocom honour,
and TIOCEXCL; a lock held by a live program is refused naming it, a stale one is replaced."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import subprocess
from pathlib import Path

import pytest
from listener import Recorder
from support import Proc, PtyDevice, start_client, start_hub

from comtunnel.errors import PortBusy
from comtunnel.ports.device import DevicePort
from comtunnel.ports.uucplock import LOCK_DIRS, UucpLock, lock_name
from comtunnel.protocol.settings import ControlRequest, PortSettings

TIOCGEXCL = 0x80045440  # Linux >= 3.8: is TIOCEXCL set on this tty

LOCK_DIR = next((d for d in LOCK_DIRS if d.is_dir() and os.access(d, os.W_OK)), None)
needs_lock_dir = pytest.mark.skipif(LOCK_DIR is None, reason="no writable /var/lock or /run/lock")


def exclusive(fd: int) -> bool:
    return bool(struct.unpack("i", fcntl.ioctl(fd, TIOCGEXCL, b"\0" * 4))[0])


def test_lock_names_follow_the_convention(tmp_path: Path) -> None:
    assert lock_name("/dev/ttyUSB0") == "LCK..ttyUSB0"
    assert lock_name("/dev/pts/3") == "LCK..pts_3"
    link = tmp_path / "by-id"
    link.symlink_to("/dev/ttyS0")
    assert lock_name(str(link)) == "LCK..ttyS0"  # one lock whatever the path used
    assert lock_name("loop://") is None and lock_name(str(tmp_path / "x")) is None


@needs_lock_dir
def test_an_open_device_is_locked_and_exclusive_and_released_at_close() -> None:
    device = PtyDevice()
    lock = LOCK_DIR / lock_name(device.path)  # type: ignore[operator]

    async def main() -> None:
        port = DevicePort(device.path, PortSettings(), ControlRequest())
        await port.open(Recorder())
        try:
            assert lock.read_text() == f"{os.getpid():10d}\n"
            assert exclusive(device.slave)
        finally:
            await port.close()
        assert not lock.exists()
        assert not exclusive(device.slave)  # cleared: the tty outlives us while the test holds it

    try:
        asyncio.run(main())
    finally:
        device.close()


@needs_lock_dir
def test_a_lock_held_by_a_live_program_is_refused_naming_it() -> None:
    device = PtyDevice()
    lock = LOCK_DIR / lock_name(device.path)  # type: ignore[operator]
    holder = subprocess.Popen(["sleep", "30"])
    lock.write_text(f"{holder.pid:10d}\n")

    async def main() -> None:
        with pytest.raises(PortBusy, match=rf"is in use by sleep \(pid {holder.pid}\) \(lock file {lock}\)"):
            await DevicePort(device.path, PortSettings(), ControlRequest()).open(Recorder())

    try:
        asyncio.run(main())
        assert lock.read_text() == f"{holder.pid:10d}\n"  # theirs: untouched
    finally:
        holder.kill()
        holder.wait(5)
        lock.unlink(missing_ok=True)
        device.close()


@needs_lock_dir
def test_a_stale_lock_is_replaced() -> None:
    device = PtyDevice()
    lock = LOCK_DIR / lock_name(device.path)  # type: ignore[operator]
    gone = subprocess.Popen(["true"])
    gone.wait(5)
    lock.write_text(f"{gone.pid:10d}\n")

    async def main() -> None:
        port = DevicePort(device.path, PortSettings(), ControlRequest())
        await port.open(Recorder())
        assert lock.read_text() == f"{os.getpid():10d}\n"
        await port.close()

    try:
        asyncio.run(main())
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)
        device.close()


def test_no_lock_directory_means_no_lock(tmp_path: Path) -> None:
    assert UucpLock.acquire("/dev/ttyS0", (tmp_path / "missing",)) is None


@needs_lock_dir
@pytest.mark.timeout(60)
def test_a_client_is_told_which_program_holds_the_device(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    lock = LOCK_DIR / lock_name(device.path)  # type: ignore[operator]
    holder = subprocess.Popen(["sleep", "30"])
    lock.write_text(f"{holder.pid:10d}\n")
    try:
        hub_port = start_hub(tmp_path, certs, procs, f"--port=dev={device.path}")
        client = start_client(tmp_path, certs, procs, hub_port, f"--link=dev={tmp_path / 'dev'}")
        client.wait_for(rf"dev: .*is in use by sleep \(pid {holder.pid}\)")
        holder.kill()
        holder.wait(5)
        client.wait_for(r"dev: open on the hub", timeout=20)  # the lock went stale: the next try opens it
        assert lock.read_text().strip() == str(procs[0].popen.pid)  # the hub's now
    finally:
        holder.kill()
        holder.wait(5)
        lock.unlink(missing_ok=True)
        device.close()
