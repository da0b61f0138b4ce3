"""DevicePort against real pyserial: ``loop://``, a PTY pair standing in for a device, ``spy://`` on a PTY.

:func:`check_port_contract` is the SerialPort conformance check (the idea of trio's check_streams),
run here against each data path; other backends can reuse it with their own far end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (imported before a child drops to 'nobody', see _open_in_child)
import os
import random
import re
import select
import signal
import termios
import threading
import time
from pathlib import Path

import listener
import pytest
import serial
from support import PtyDevice, read_exactly, wait_for, write_all

from comtunnel.aio import loop
from comtunnel.errors import PortBusy, PortError, PortGone, PortNotSupported, PortUnavailable
from comtunnel.ports import termios2
from comtunnel.ports.device import DevicePort
from comtunnel.protocol.settings import (
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    Purge,
    StopBits,
)

OFF = ControlRequest(dtr=False, rts=False)
# pyserial's loop:// queues one byte per Queue.put (about 7 s per MiB here) and spy://'s hexdump
# formats per byte, so those paths carry less than the PTY's 1 MiB to keep this file quick.
PTY_SIZE = 1 << 20
LOOP_SIZE = 64 << 10
SPY_SIZE = 128 << 10


class Recorder(listener.Recorder):
    """A device port never reports what only a virtual port's application does."""

    def app_settings(self, settings: PortSettings) -> None:
        self.violations.append("app_settings from a device port")

    def app_open(self, is_open: bool) -> None:
        self.violations.append("app_open from a device port")

    def app_purge(self, which: Purge) -> None:
        self.violations.append("app_purge from a device port")

    def app_control(self, request: ControlRequest) -> None:
        self.violations.append("app_control from a device port")


class MasterEnd:
    """The far end of a PTY 'device': what the serial cable would be connected to."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(write_all, self.fd, data)

    async def receive(self, size: int) -> bytes:
        return await asyncio.to_thread(read_exactly, self.fd, size)


async def check_port_contract(port: DevicePort, rec: Recorder, far: MasterEnd | None, size: int) -> None:
    """Data both ways, every byte value, drained, pause/resume, close. ``far=None``: a loopback port."""
    payload = bytes(range(256)) + os.urandom(size)
    # port -> far: one large write, then many small ones, which must keep their order
    half = len(payload) // 2
    receiving = asyncio.ensure_future(far.receive(len(payload))) if far else None
    port.write(payload[:half])
    assert port.write_buffer_size > 0, "a write larger than any kernel buffer must be partly buffered"
    cuts = sorted(random.sample(range(half + 1, len(payload)), 300))
    for start, end in zip([half, *cuts], [*cuts, len(payload)], strict=True):
        port.write(payload[start:end])
    if receiving is not None:
        assert await receiving == payload
    else:
        await wait_for(lambda: len(rec.data) >= len(payload), 20)
        assert rec.data == payload
    await wait_for(lambda: rec.drained > 0 and port.write_buffer_size == 0)
    # far -> port
    if far is not None:
        rec.data.clear()
        await far.send(payload)
        await wait_for(lambda: len(rec.data) >= len(payload), 20)
        assert rec.data == payload
    # pause: nothing is delivered, even what a reader had in flight; resume: all of it, in order
    rec.data.clear()
    port.pause_reading()
    rec.paused = True
    marker = b"sent while paused \x00\xff"
    for piece in (marker[:5], marker[5:]):
        await (far.send(piece) if far else asyncio.to_thread(port.write, piece))
        await asyncio.sleep(0.1)
    assert rec.data == b""
    rec.paused = False
    port.resume_reading()
    await wait_for(lambda: len(rec.data) >= len(marker))
    assert rec.data == marker
    # close: idempotent, then silence
    await port.close()
    await port.close()
    rec.closed = True
    with pytest.raises(PortGone):
        port.write(b"late")
    if far is not None:
        await far.send(b"after close")
    await asyncio.sleep(0.1)
    assert rec.violations == []
    assert rec.lost == []


def test_contract_loop() -> None:
    async def main() -> None:
        rec = Recorder()
        port = DevicePort("loop://", PortSettings(115200), OFF)
        await port.open(rec)
        assert not port.uses_fd
        await check_port_contract(port, rec, None, LOOP_SIZE)

    asyncio.run(main())


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_contract_pty_device(use_uvloop: bool) -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        port = DevicePort(device.path, PortSettings(115200), OFF)
        await port.open(rec)
        assert port.uses_fd
        await check_port_contract(port, rec, MasterEnd(device.master), PTY_SIZE)

    try:
        loop.run(main(), use_uvloop=use_uvloop)  # the hub runs on uvloop
    finally:
        device.close()


def test_contract_spy_on_pty_keeps_the_spy_log(tmp_path: Path) -> None:
    device = PtyDevice()
    spy_log = tmp_path / "spy.log"

    async def main() -> None:
        rec = Recorder()
        port = DevicePort(f"spy://{device.path}?file={spy_log}", PortSettings(115200), OFF)
        await port.open(rec)
        assert not port.uses_fd, "spy:// must go through pyserial's read/write, where its log is"
        await check_port_contract(port, rec, MasterEnd(device.master), SPY_SIZE)

    try:
        asyncio.run(main())
    finally:
        device.close()
    text = spy_log.read_text()
    assert "TX   0000  00 01 02 03 04 05 06 07  08 09 0A 0B 0C 0D 0E 0F" in text
    assert len(re.findall(r"RX   [0-9A-F]{4}  ", text)) >= SPY_SIZE // 16
    assert "DTR  inactive" in text and "active\n" not in text.replace("inactive\n", "")


def test_loop_dtr_rts_come_back_as_dsr_cts_within_100_ms() -> None:
    async def main() -> None:
        rec = Recorder()
        port = DevicePort("loop://", PortSettings(), OFF)
        opened = time.monotonic()
        await port.open(rec)
        try:
            await wait_for(lambda: bool(rec.modem), 0.1)
            assert rec.lines() & (ModemLines.DSR | ModemLines.CTS) == ModemLines.NONE, "opened with DTR/RTS off"
            assert port.modem_supported
            for request, expected in (
                (ControlRequest(dtr=True), ModemLines.DSR),
                (ControlRequest(rts=True), ModemLines.DSR | ModemLines.CTS),
                (ControlRequest(dtr=False), ModemLines.CTS),
                (ControlRequest(rts=False, dtr=True), ModemLines.DSR),
            ):
                asked = time.monotonic()
                state = await port.set_control(request)
                assert state == request.apply_to(state)
                await wait_for(lambda e=expected: rec.lines() & (ModemLines.DSR | ModemLines.CTS) == e, 0.1)
                assert rec.modem[-1][0] - asked < 0.1
                assert port.modem_lines() == rec.lines()
            assert rec.modem[0][0] - opened < 0.5
        finally:
            await port.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        (ControlRequest(), ModemLines.NONE),  # None means off: opening must not raise a line
        (ControlRequest(dtr=True), ModemLines.DSR),
        (ControlRequest(dtr=True, rts=True), ModemLines.DSR | ModemLines.CTS),
    ],
)
def test_open_applies_the_requested_lines(control: ControlRequest, expected: ModemLines) -> None:
    async def main() -> None:
        rec = Recorder()
        port = DevicePort("loop://", PortSettings(), control)
        await port.open(rec)
        try:
            await wait_for(lambda: bool(rec.modem), 0.1)
            assert rec.modem[0][1] & (ModemLines.DSR | ModemLines.CTS) == expected  # the very first report
        finally:
            await port.close()

    asyncio.run(main())


def test_settings_on_a_pty_device_reach_termios() -> None:
    device = PtyDevice()

    async def main() -> None:
        port = DevicePort(device.path, PortSettings(115200), OFF)
        await port.open(Recorder())
        try:
            applied = await port.apply_settings(PortSettings(250000, 7, Parity.EVEN, StopBits.TWO, rtscts=True))
            t = termios2.get(device.slave)
            assert (t.cflag & termios2.CBAUD, t.ospeed) == (termios2.BOTHER, 250000)
            assert t.cflag & termios.CSTOPB and t.cflag & termios.CRTSCTS
            # a PTY forces CS8 and drops parity; the port must not claim what the device does not hold
            assert t.cflag & termios.CSIZE == termios.CS8 and not t.cflag & termios.PARENB
            assert applied == PortSettings(250000, 8, Parity.NONE, StopBits.TWO, rtscts=True)
            applied = await port.apply_settings(PortSettings(9600, xonxoff=True))
            t = termios2.get(device.slave)
            assert t.cflag & termios2.CBAUD == termios.B9600 and not t.cflag & (termios.CSTOPB | termios.CRTSCTS)
            assert t.iflag & termios.IXOFF and not t.iflag & termios.IXON  # IXON is done by DevicePort itself
            assert applied == PortSettings(9600, xonxoff=True) == port.settings
        finally:
            await port.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def test_a_pty_device_opens_with_settings_it_cannot_hold() -> None:
    device = PtyDevice()

    async def main() -> None:
        port = DevicePort(device.path, PortSettings(250000, 7, Parity.ODD, StopBits.TWO), OFF)
        await port.open(Recorder())
        try:
            assert port.settings == PortSettings(250000, 8, Parity.NONE, StopBits.TWO)
            assert termios2.get(device.slave).ospeed == 250000
        finally:
            await port.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


@pytest.mark.parametrize(
    "settings",
    [
        PortSettings(250000, 7, Parity.EVEN, StopBits.TWO),
        PortSettings(300, 5, Parity.MARK, StopBits.ONE_POINT_FIVE, xonxoff=True),
        PortSettings(12_000_000, 6, Parity.SPACE, StopBits.ONE, rtscts=True),
        PortSettings(1234, 8, Parity.ODD),
    ],
)
def test_settings_read_back_on_loop(settings: PortSettings) -> None:
    async def main() -> None:
        port = DevicePort("loop://", PortSettings(), OFF)
        await port.open(Recorder())
        try:
            assert await port.apply_settings(settings) == settings
        finally:
            await port.close()

    asyncio.run(main())


def test_a_pty_device_has_no_modem_lines_but_keeps_working() -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        port = DevicePort(device.path, PortSettings(), OFF)
        await port.open(rec)
        try:
            with pytest.raises(PortNotSupported, match=r"has no DTR/RTS lines \(not a serial port\?\)"):
                await port.set_control(ControlRequest(dtr=True, rts=True, break_=True))
            assert port.control == ControlState(break_=True)  # what it could do, it did
            assert not port.modem_supported and port.modem_lines() == ModemLines.NONE and rec.modem == []
            assert await port.set_control(ControlRequest(break_=False)) == ControlState()
            port.write(b"still here")
            assert await asyncio.to_thread(read_exactly, device.master, 10, 5) == b"still here"
            assert rec.lost == [] and rec.violations == []
        finally:
            await port.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def test_open_errors_are_port_errors_with_clear_text(tmp_path: Path) -> None:
    device = PtyDevice()

    async def main() -> None:
        missing = tmp_path / "ttyUSB9"
        with pytest.raises(PortUnavailable, match=f"^no such device: {missing}$"):
            await DevicePort(str(missing), PortSettings(), OFF).open(Recorder())
        with pytest.raises(PortUnavailable, match="protocol 'nosuch' not known"):
            await DevicePort("nosuch://x", PortSettings(), OFF).open(Recorder())
        with pytest.raises(PortUnavailable, match="/dev/null is not a serial port"):
            await DevicePort("/dev/null", PortSettings(), OFF).open(Recorder())
        holder = serial.Serial(device.path, exclusive=True)
        try:
            with pytest.raises(PortBusy, match=f"^{device.path} is in use by another program$"):
                await DevicePort(device.path, PortSettings(), OFF).open(Recorder())
            shared = DevicePort(device.path, PortSettings(), OFF, exclusive=False)
            await shared.open(Recorder())  # asked not to lock: the other program's lock is no obstacle
            await shared.close()
        finally:
            holder.close()
        first = DevicePort(device.path, PortSettings(), OFF)
        await first.open(Recorder())
        try:
            with pytest.raises(PortBusy):
                await DevicePort(device.path, PortSettings(), OFF).open(Recorder())
        finally:
            await first.close()
        with pytest.raises(PortError, match="already opened"):
            await first.open(Recorder())

    try:
        asyncio.run(main())
    finally:
        device.close()


def _open_in_child(path: Path, uid: int | None) -> str:
    """Open in a forked child, as ``uid`` if given; return what happened as 'Type: message'.

    The child cannot import anything new once it is 'nobody' (the interpreter may live under /root).
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            try:
                asyncio.run(DevicePort(str(path), PortSettings(), OFF).open(Recorder()))
                result = "opened"
            except Exception as exc:
                result = f"{type(exc).__name__}: {exc}"
            os.write(wfd, result.encode())
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the child did not finish")
            time.sleep(0.01)
        return os.read(rfd, 65536).decode()  # it wrote less than a pipe holds, then exited
    finally:
        os.close(rfd)


def test_permission_denied_names_the_fix(tmp_path: Path) -> None:
    # root bypasses file modes, so as root the open runs in a child that has become 'nobody'
    locked = tmp_path / "ttyS0"
    locked.touch(mode=0o000)
    result = _open_in_child(locked, 65534 if os.geteuid() == 0 else None)
    assert result == f"PortUnavailable: permission denied opening {locked} (add the user to the dialout group)"


@pytest.mark.parametrize("spy", [False, True], ids=["pty", "spy"])
def test_a_vanishing_device_is_reported_once(spy: bool) -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        url = f"spy://{device.path}?file=/dev/null" if spy else device.path
        port = DevicePort(url, PortSettings(), OFF)
        await port.open(rec)
        port.write(os.urandom(1 << 20))  # mid-write too: reader and writer both see the device go
        os.close(device.master)  # the cable is pulled: the device hangs up
        os.close(device.slave)
        await wait_for(lambda: bool(rec.lost), 2)
        await asyncio.sleep(0.2)
        assert len(rec.lost) == 1 and isinstance(rec.lost[0], PortGone)
        assert str(rec.lost[0]).startswith(f"{url}: ")  # pyserial's reason (spy) or ours: "... (unplugged?)"
        with pytest.raises(PortGone):
            port.write(b"x")
        with pytest.raises(PortGone):
            await port.apply_settings(PortSettings())
        await port.close()
        assert rec.violations == []

    asyncio.run(main())


def test_failures_on_a_hung_up_device_are_port_errors() -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        port = DevicePort(device.path, PortSettings(), OFF)
        await port.open(rec)
        port.pause_reading()  # so the reader does not notice first
        os.close(device.master)
        os.close(device.slave)
        with pytest.raises(PortError, match=f"cannot set 9600,7E1 on {device.path}: .*Input/output error"):
            await port.apply_settings(PortSettings(9600, 7, Parity.EVEN))
        with pytest.raises(PortError, match="cannot purge"):
            await port.purge(Purge.BOTH)
        with pytest.raises(PortGone, match="write failed: Input/output error"):
            port.write(b"x")
        assert rec.lost == []  # the write's caller was told; the listener is not told again
        await port.close()

    asyncio.run(main())


def test_purge_drops_what_is_waiting() -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        port = DevicePort(device.path, PortSettings(), OFF)
        await port.open(rec)
        try:
            port.pause_reading()
            os.write(device.master, b"stale")
            await asyncio.sleep(0.05)
            await port.purge(Purge.RECEIVE)
            port.resume_reading()
            os.write(device.master, b"fresh")
            await wait_for(lambda: len(rec.data) >= 5)
            await asyncio.sleep(0.05)
            assert rec.data == b"fresh"
            port.write(os.urandom(1 << 20))  # nobody reads the master: most of it stays in our buffer
            assert port.write_buffer_size > 0
            drained = rec.drained
            await port.purge(Purge.TRANSMIT)
            assert port.write_buffer_size == 0 and rec.drained == drained + 1
            port.write(b"next")
            await asyncio.sleep(0.05)
            left = await asyncio.to_thread(_read_available, device.master)
            assert left.endswith(b"next") and len(left) < 1 << 20
        finally:
            await port.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def test_threads_of_a_port_never_closed_end_with_their_loop() -> None:
    async def main() -> set[threading.Thread]:
        before = set(threading.enumerate())
        await DevicePort("loop://", PortSettings(), OFF).open(Recorder())
        return {
            t for t in set(threading.enumerate()) - before if not t.name.startswith("asyncio")
        }  # the owner forgets close(): a bug, but not a leak

    ours = asyncio.run(main())
    assert len(ours) == 2
    for thread in ours:
        thread.join(2)
        assert not thread.is_alive()


def test_an_open_cancelled_or_closed_midway_leaves_the_device_free() -> None:
    device = PtyDevice()

    async def main() -> None:
        port = DevicePort(device.path, PortSettings(), OFF)
        opening = asyncio.ensure_future(port.open(Recorder()))
        await asyncio.sleep(0)  # pyserial is now opening in its thread
        await port.close()
        with pytest.raises(PortGone, match="closed while it was being opened"):
            await opening
        opening = asyncio.ensure_future(DevicePort(device.path, PortSettings(), OFF).open(Recorder()))
        await asyncio.sleep(0)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        await asyncio.sleep(0.2)  # the cancelled open's clean-up runs when its thread is done
        last = DevicePort(device.path, PortSettings(), OFF)  # exclusive: fails if either kept its lock
        await last.open(Recorder())
        await last.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def _read_available(fd: int) -> bytes:
    out = bytearray()
    while select.select([fd], [], [], 0.05)[0]:
        out += os.read(fd, 65536)
    return bytes(out)


def test_purge_on_the_thread_path() -> None:
    async def main() -> None:
        rec = Recorder()
        port = DevicePort("loop://", PortSettings(), OFF)
        await port.open(rec)
        try:
            port.pause_reading()
            port.write(b"stale")
            await wait_for(lambda: rec.drained > 0)
            await port.purge(Purge.RECEIVE)
            port.resume_reading()
            port.write(b"fresh")
            await wait_for(lambda: len(rec.data) >= 5)
            await asyncio.sleep(0.1)
            assert rec.data == b"fresh"
        finally:
            await port.close()

    asyncio.run(main())


def test_close_is_prompt_even_with_a_blocked_writer_thread() -> None:
    async def main() -> None:
        before = set(threading.enumerate())
        port = DevicePort("loop://", PortSettings(), OFF)
        await port.open(Recorder())
        ours = {t for t in set(threading.enumerate()) - before if not t.name.startswith("asyncio")}
        assert len(ours) == 2  # a reader and a writer
        port.pause_reading()
        port.write(bytes(1 << 16))  # loop:// holds 4 KiB: the writer thread blocks inside pyserial
        await asyncio.sleep(0.1)
        assert port.write_buffer_size > 0
        started = time.monotonic()
        await port.close()
        assert time.monotonic() - started < 0.5
        assert not [t for t in ours if t.is_alive()]

    asyncio.run(main())
