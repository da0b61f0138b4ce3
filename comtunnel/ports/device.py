"""A real serial device, or any pyserial URL, as a :class:`SerialPort` (the hub's ports, ``client --attach``).

Theory of operation
-------------------
Opening never pulses DTR/RTS: they are set on the unopened pyserial object, which applies them
as part of ``open()``, so a board that resets on a DTR edge (Arduino) stays untouched unless the
client asked for the line. Blocking pyserial calls (open, line settings, control lines, purge) run
in a worker thread, one at a time.

Two data paths, chosen once at open:

* **fd**: a plain posix port (a tty, a PTY standing in for a device) is driven like an asyncio
  transport: non-blocking fd, ``add_reader`` with 64 KiB reads, writes straight to the fd and the
  rest buffered behind ``add_writer``. No threads, no per-read futures.
* **threads**: everything else (``loop://``, ``socket://``) and every pyserial class that overrides
  ``read``/``write`` (``spy://``: its log *is* those methods, so bypassing them through the fd would
  leave the log empty). One reader thread (short read timeout, parks on an event while paused) and
  one writer thread (ordered queue) hand their results to the loop with ``call_soon_threadsafe``.

A failure found while reading or writing (EIO, a hang-up) closes the port and is reported once
through ``port_lost``; a failure raised to a ``write()`` caller is not reported again.

Modem input lines have no change notification that works everywhere, so they are polled every
20 ms on the loop thread (one ioctl; an attribute read for ``loop://``) and reported on change. The
poll uses TIOCMGET on the fd even for ``spy://``: 50 queries a second would drown its log. A device
without modem lines (a PTY: ENOTTY) stops the poll and says so through :attr:`modem_supported`.

Settings are read back after each change: from termios for fd ports, so what a PTY silently
refuses (parity, data bits) is not claimed; from pyserial's attributes otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
import termios
import threading
import time
from collections import deque
from typing import Any

import serial
from serial import serialposix

from comtunnel.errors import PortBusy, PortError, PortGone, PortNotSupported, PortUnavailable
from comtunnel.ports import termios2
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.fdio import FdWriter
from comtunnel.protocol.settings import (
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    Purge,
    SettingsError,
    StopBits,
)

log = logging.getLogger(__name__)

READ_SIZE = 65536
DRAIN_LIMIT = 256 * 1024  # per wake-up, so one busy device cannot hold the loop for long
WRITE_CHUNK = 16384  # thread path: writes are joined or split to this; a closing writer finishes one chunk
THREAD_READ_TIMEOUT = 0.05  # how long a paused or closing reader thread can take to notice
MODEM_POLL_INTERVAL = 0.02
JOIN_TIMEOUT = 1.0
ABANDON_CHECK = 0.5  # how often an idle thread checks that its event loop still exists
OUTPUT_STALL = 2.0  # a line change stops waiting for output that has not moved for this long
XON, XOFF = b"\x11", b"\x13"
CMSPAR = 0o10000000000  # Linux: mark/space parity; not exported by the termios module
_NO_LINES = {errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP}
_PYSERIAL_STOPBITS = {
    StopBits.ONE: serial.STOPBITS_ONE,
    StopBits.ONE_POINT_FIVE: serial.STOPBITS_ONE_POINT_FIVE,
    StopBits.TWO: serial.STOPBITS_TWO,
}
_BYTESIZE = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
_TIOCM = (
    (termios.TIOCM_CTS, ModemLines.CTS),
    (termios.TIOCM_DSR, ModemLines.DSR),
    (termios.TIOCM_RI, ModemLines.RI),
    (termios.TIOCM_CD, ModemLines.CD),
)


class DevicePort(SerialPort):
    """``settings`` and ``control`` are what the port opens with (None control lines stay off)."""

    def __init__(self, url: str, settings: PortSettings, control: ControlRequest, *, exclusive: bool = True) -> None:
        self.url = url
        self.description = url
        self.settings = settings  # in effect (read back) once open
        self.control = ControlState(dtr=bool(control.dtr), rts=bool(control.rts))
        self.exclusive = exclusive
        self.modem_supported = True
        self.uses_fd = False  # which data path open() chose
        self.output_stopped = False  # XOFF received (software flow control on the fd path)
        self._ser: serial.Serial | None = None
        self._ioctl_fd: int | None = None  # posix ports (spy:// included): for termios and modem reads
        self._io: _FdIO | _ThreadIO | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: PortListener | None = None
        self._paused = False
        self._held: list[bytes] = []  # thread path: reads that were in flight when reading was paused
        self._closed = False
        self._release: asyncio.Future[None] | None = None
        self._ops = asyncio.Lock()
        self._modem = ModemLines.NONE
        self._modem_reported = False
        self._poll: asyncio.TimerHandle | None = None

    # --- open / close ------------------------------------------------------------------------

    async def open(self, listener: PortListener) -> None:
        if self._ser is not None or self._closed:
            raise PortError(f"{self.url} was already opened once; make a new DevicePort")
        loop = asyncio.get_running_loop()
        ser = self._make_serial()
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_blocking, ser))
        try:
            self.settings = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(lambda f: _close_if_opened(f, ser))
            raise
        if self._closed:  # close() came while we were opening
            _quiet_close(ser)
            raise PortGone(f"{self.url} was closed while it was being opened")
        if isinstance(ser, serialposix.Serial):
            self._ioctl_fd = ser.fileno()
        self._ser, self._loop, self._listener = ser, loop, listener
        fd_path = self._ioctl_fd is not None and _plain_posix(ser)
        self._io = _FdIO(self, loop, ser.fileno()) if fd_path else _ThreadIO(self, loop, ser)
        self.uses_fd = fd_path
        self._io.start(reading=not self._paused)
        self._poll_modem()

    def _make_serial(self) -> serial.Serial:
        try:
            ser = serial.serial_for_url(self.url, do_not_open=True)
            # Open with data bits and parity any tty holds (a PTY fails open() on 7E1, see _set_line);
            # the real ones follow at once through _configure, which tolerates their refusal.
            _set_line(ser, self.settings.replace(bytesize=8, parity=Parity.NONE))
        except (ValueError, OSError) as exc:
            raise PortUnavailable(f"cannot use {self.url!r}: {exc}") from None
        ser.dtr = self.control.dtr  # applied by open(): no edge at open
        ser.rts = self.control.rts
        ser.timeout = THREAD_READ_TIMEOUT
        if isinstance(ser, serialposix.Serial):
            ser.exclusive = self.exclusive  # flock: a second exclusive opener gets PortBusy
        return ser

    def _open_blocking(self, ser: serial.Serial) -> PortSettings:
        try:
            ser.open()
        except (OSError, ValueError, termios.error) as exc:  # SerialException is an OSError
            raise _open_error(self.url, exc) from None
        fd = ser.fileno() if isinstance(ser, serialposix.Serial) else None
        try:
            return _configure(ser, fd, self.settings)
        except (OSError, ValueError, termios.error) as exc:
            _quiet_close(ser)
            raise PortUnavailable(f"cannot use {self.settings.short()} on {self.url}: {_reason(exc)}") from None

    async def close(self) -> None:
        self._halt()
        if self._release is None:
            self._release = asyncio.ensure_future(self._release_resources())
        await asyncio.shield(self._release)

    def _halt(self) -> None:
        """Stop every callback source at once; the slow part (threads, the device) is _release_resources."""
        if self._closed:
            return
        self._closed = True
        self._listener = None
        self._held.clear()
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._io is not None:
            self._io.stop()

    async def _release_resources(self) -> None:
        ser, io = self._ser, self._io
        if ser is None:
            return
        if isinstance(io, _ThreadIO):
            await asyncio.to_thread(io.join)
        _quiet_close(ser)

    def _fail(self, reason: str, *, notify: bool = True) -> PortGone:
        exc = PortGone(f"{self.url}: {reason}")
        if self._closed:
            return exc
        listener = self._listener
        self._halt()
        assert self._loop is not None
        self._release = self._loop.create_task(self._release_resources())
        log.warning("%s", exc)
        if notify and listener is not None:
            listener.port_lost(exc)
        return exc

    # --- callbacks from the data paths (loop thread) ------------------------------------------

    def _received(self, data: bytes) -> None:
        if self._closed:
            return
        if self.uses_fd and self.settings.xonxoff and (XOFF in data or XON in data):
            data = self._flow_control(data)
            if not data:
                return
        if self._paused or self._held:  # keep order behind anything held back
            self._held.append(data)
        elif self._listener is not None:
            self._listener.port_data(data)

    def _flow_control(self, data: bytes) -> bytes:
        """XON/XOFF as the kernel's IXON does it (stop at once, take the characters out), but seen
        here, so the stop can be passed on: the application's own tty stops too, as on a local port."""
        stopped = data.rfind(XOFF) > data.rfind(XON)
        if stopped != self.output_stopped:
            self._set_output_stopped(stopped)
        return data.replace(XOFF, b"").replace(XON, b"")

    def _set_output_stopped(self, stopped: bool) -> None:
        self.output_stopped = stopped
        if self._ioctl_fd is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcflow(self._ioctl_fd, termios.TCOOFF if stopped else termios.TCOON)
        if self._listener is not None:
            self._listener.port_flow(stopped)

    def _release_held(self) -> None:
        if self._held and not self._paused and not self._closed and self._listener is not None:
            data = b"".join(self._held)
            self._held.clear()
            self._listener.port_data(data)

    def _drained(self) -> None:
        if not self._closed and self._listener is not None:
            self._listener.port_drained()

    # --- SerialPort ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed or self._io is None:
            raise PortGone(f"{self.url} is closed")
        if not data:
            return
        try:
            self._io.write(data)
        except OSError as exc:
            raise self._fail(f"write failed: {_reason(exc)} (unplugged?)", notify=False) from None

    @property
    def write_buffer_size(self) -> int:
        return self._io.buffered if self._io is not None else 0

    def pause_reading(self) -> None:
        if not self._paused and not self._closed:
            self._paused = True
            if self._io is not None:
                self._io.pause()

    def resume_reading(self) -> None:
        if self._paused and not self._closed:
            self._paused = False
            if self._io is not None:
                self._io.resume()
            if self._held and self._loop is not None:
                self._loop.call_soon(self._release_held)

    @property
    def holds_back(self) -> bool:
        if self.settings.rtscts or self.settings.xonxoff:
            return True  # the device is told to wait (RTS low, XOFF) when we stop reading
        if self.url.startswith(("socket://", "loop://")):
            return True
        return self._ioctl_fd is not None and _is_pty(self._ioctl_fd)

    async def _output_sent(self) -> bool:
        """TCSADRAIN's wait, on the loop: until the tty's output queue (TIOCOUTQ) is empty. Not tcdrain
        in the worker: that blocks for good on a line stopped by flow control, or on a PTY nobody
        reads, and cannot be cancelled. False if the queue did not move for OUTPUT_STALL."""
        fd = self._ioctl_fd
        delay, last, since = 0.001, -1, time.monotonic()
        while fd is not None and not self._closed:
            try:
                queued = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(4)))[0]
            except OSError:
                return True
            if queued <= 0:
                return True
            now = time.monotonic()
            if queued != last:
                last, since = queued, now
            elif now - since >= OUTPUT_STALL:
                log.warning("%s: %d bytes of output are not moving (flow control?)", self.url, queued)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        ser = self._require_open()
        async with self._ops:
            await self._output_sent()
            try:
                effective = await asyncio.to_thread(_configure, ser, self._ioctl_fd, settings)
            except (OSError, ValueError, termios.error) as exc:
                with contextlib.suppress(OSError, ValueError, termios.error):
                    await asyncio.to_thread(_configure, ser, self._ioctl_fd, self.settings)
                raise PortError(f"cannot set {settings.short()} on {self.url}: {_reason(exc)}") from None
        self.settings = effective
        if self.output_stopped and not effective.xonxoff:
            self._set_output_stopped(False)  # as clearing IXON restarts a tty
        return effective

    async def set_control(self, request: ControlRequest) -> ControlState:
        ser = self._require_open()
        async with self._ops:
            await self._output_sent()
            state, missing, error = await asyncio.to_thread(_set_lines, ser, self.control, request)
        self.control = state
        if not self._closed:
            self._check_modem()  # a loopback wiring answers at once: do not wait for the next poll
        if error is not None:
            raise PortError(f"cannot set {error[0]} on {self.url}: {error[1]}")
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise PortNotSupported(f"{self.url} has no {'/'.join(missing)} line{plural} (not a serial port?)")
        return state

    async def purge(self, which: Purge) -> None:
        ser = self._require_open()
        assert self._io is not None
        if which & Purge.RECEIVE:
            self._held.clear()
        if which & Purge.TRANSMIT and self._io.purge_output():
            self._drained()  # what was accepted will never be written: let the sender have its credit
        async with self._ops:
            try:
                if which & Purge.RECEIVE:
                    await asyncio.to_thread(ser.reset_input_buffer)
                if which & Purge.TRANSMIT:
                    await asyncio.to_thread(ser.reset_output_buffer)
            except (OSError, ValueError, termios.error) as exc:
                raise PortError(f"cannot purge {self.url}: {_reason(exc)}") from None

    def modem_lines(self) -> ModemLines:
        return self._modem

    def _require_open(self) -> serial.Serial:
        if self._closed or self._ser is None:
            raise PortGone(f"{self.url} is closed")
        return self._ser

    # --- modem lines ----------------------------------------------------------------------------

    def _poll_modem(self) -> None:
        self._poll = None
        self._check_modem()
        if not self._closed and self.modem_supported and self._loop is not None:
            self._poll = self._loop.call_later(MODEM_POLL_INTERVAL, self._poll_modem)

    def _check_modem(self) -> None:
        if self._closed or not self.modem_supported:
            return
        try:
            lines = self._read_modem()
        except (OSError, NotImplementedError) as exc:
            if isinstance(exc, NotImplementedError) or exc.errno in _NO_LINES:
                self.modem_supported = False
                log.info("%s has no modem status lines; not watching them", self.url)
            else:
                self._fail(f"cannot read the modem lines: {_reason(exc)} (unplugged?)")
            return
        if lines != self._modem or not self._modem_reported:
            self._modem = lines
            self._modem_reported = True
            if self._listener is not None:
                self._listener.port_modem(lines)

    def _read_modem(self) -> ModemLines:
        lines = ModemLines.NONE
        if self._ioctl_fd is not None:
            bits = struct.unpack("I", fcntl.ioctl(self._ioctl_fd, termios.TIOCMGET, bytes(4)))[0]
            for bit, line in _TIOCM:
                if bits & bit:
                    lines |= line
            return lines
        ser = self._ser
        assert ser is not None
        for present, line in ((ser.cts, ModemLines.CTS), (ser.dsr, ModemLines.DSR), (ser.ri, ModemLines.RI)):
            if present:
                lines |= line
        return lines | ModemLines.CD if ser.cd else lines


class _FdIO:
    """The fd data path: a non-blocking fd on the event loop, buffered like an asyncio transport."""

    def __init__(self, port: DevicePort, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._port = port
        self._loop = loop
        self._fd = fd
        self._writer = FdWriter(loop, fd, port._drained, self._write_failed)

    @property
    def buffered(self) -> int:
        return self._writer.size

    def start(self, *, reading: bool) -> None:
        os.set_blocking(self._fd, False)
        if reading:
            self.resume()

    def pause(self) -> None:
        self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        self._loop.add_reader(self._fd, self._readable)

    def stop(self) -> None:
        self._loop.remove_reader(self._fd)
        self._writer.clear()

    def _readable(self) -> None:
        # Drain what is there (ttys hand out a few KiB per read): one chunk per wake-up downstream.
        chunks: list[bytes] = []
        size = 0
        hung_up = False
        while size < DRAIN_LIMIT:
            try:
                data = os.read(self._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if chunks:
                    self._port._received(b"".join(chunks))
                self._port._fail(f"read failed: {_reason(exc)} (unplugged?)")
                return
            if not data:
                hung_up = True
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            self._port._received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            return
        if not hung_up:
            return
        # A tty read of 0 bytes is a hang-up, or (VMIN=0) a wake-up whose data someone else took.
        try:
            termios.tcgetattr(self._fd)
        except (termios.error, OSError):
            self._port._fail("the device hung up (unplugged?)")

    def write(self, data: bytes) -> None:
        """Raises OSError when the device has failed."""
        self._writer.write(data)

    def _write_failed(self, exc: OSError) -> None:
        self._port._fail(f"write failed: {_reason(exc)} (unplugged?)")

    def purge_output(self) -> bool:
        """Drop unwritten bytes; True if there were any."""
        return self._writer.clear()


class _ThreadIO:
    """The thread data path: pyserial's own blocking read()/write(), one thread each."""

    def __init__(self, port: DevicePort, loop: asyncio.AbstractEventLoop, ser: serial.Serial) -> None:
        self._port = port
        self._loop = loop
        self._ser = ser
        self.buffered = 0  # loop thread only
        self._run = threading.Event()
        self._stop = threading.Event()
        self._queue: deque[bytes | memoryview] = deque()
        self._queue_changed = threading.Condition()
        name = port.url
        self._threads = (
            threading.Thread(target=self._read_loop, name=f"read {name}", daemon=True),
            threading.Thread(target=self._write_loop, name=f"write {name}", daemon=True),
        )

    def start(self, *, reading: bool) -> None:
        if reading:
            self._run.set()
        for thread in self._threads:
            thread.start()

    def pause(self) -> None:
        self._run.clear()

    def resume(self) -> None:
        self._run.set()

    def stop(self) -> None:
        self._stop.set()
        self._run.set()
        with self._queue_changed:
            self._queue.clear()
            self._queue_changed.notify_all()
        self.buffered = 0
        for cancel in ("cancel_read", "cancel_write"):  # posix: wakes a blocked select at once
            with contextlib.suppress(Exception):
                getattr(self._ser, cancel)()

    def join(self) -> None:
        """Wait for both threads (from a worker thread); unblock a writer stuck on a full loop:// queue."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        reader, writer = self._threads
        while writer.is_alive() and time.monotonic() < deadline:
            writer.join(0.01)
            if writer.is_alive():
                with contextlib.suppress(Exception):  # output is being dropped anyway: we are closing
                    self._ser.reset_output_buffer()
        reader.join(max(0.0, deadline - time.monotonic()))

    def write(self, data: bytes) -> None:
        self.buffered += len(data)
        with self._queue_changed:
            self._queue.append(data)
            self._queue_changed.notify()

    def purge_output(self) -> bool:
        with self._queue_changed:
            dropped = sum(map(len, self._queue))
            self._queue.clear()
        self.buffered -= dropped
        return dropped > 0 and self.buffered == 0

    def _written(self, size: int) -> None:
        if self._stop.is_set():
            return
        self.buffered -= size
        if self.buffered == 0:
            self._port._drained()

    def _report(self, callback: Any, arg: Any) -> None:
        if not self._stop.is_set():
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(callback, arg)

    def _abandoned(self) -> bool:
        """Stopped, or the event loop is gone without close() (an owner's bug): either way, end the thread."""
        return self._stop.is_set() or self._loop.is_closed()

    def _read_loop(self) -> None:
        ser = self._ser
        while True:
            self._run.wait(ABANDON_CHECK)
            if self._abandoned():
                return
            if not self._run.is_set():
                continue
            try:
                data = ser.read(max(1, min(ser.in_waiting, READ_SIZE)))
            except Exception as exc:  # backends raise SerialException, OSError, TypeError on a closed fd...
                self._report(self._port._fail, f"read failed: {_reason(exc)}")
                return
            if data:
                self._report(self._port._received, data)

    def _write_loop(self) -> None:
        while True:
            with self._queue_changed:
                while not self._queue and not self._abandoned():
                    self._queue_changed.wait(ABANDON_CHECK)
                if self._abandoned():
                    return
                chunk = self._take()
            try:
                self._ser.write(chunk)
            except Exception as exc:  # as in _read_loop
                self._report(self._port._fail, f"write failed: {_reason(exc)}")
                return
            self._report(self._written, len(chunk))

    def _take(self) -> bytes | memoryview:
        """Pop up to WRITE_CHUNK bytes: small writes joined (pyserial's cost is per call), large ones split."""
        head = self._queue.popleft()
        if len(head) > WRITE_CHUNK:
            view = memoryview(head)  # split without copying the rest
            self._queue.appendleft(view[WRITE_CHUNK:])
            return view[:WRITE_CHUNK]
        parts = [head]
        size = len(head)
        while self._queue and size + len(self._queue[0]) <= WRITE_CHUNK:
            size += len(self._queue[0])
            parts.append(self._queue.popleft())
        return head if len(parts) == 1 else b"".join(parts)


def _plain_posix(ser: serial.Serial) -> bool:
    """A posix port whose read/write are posix's own, so the fd can be driven directly."""
    cls = type(ser)
    return cls.read is serialposix.Serial.read and cls.write is serialposix.Serial.write


def _is_pty(fd: int) -> bool:
    """A PTY slave standing in for a device (Linux: majors 136-143)."""
    try:
        return 136 <= os.major(os.fstat(fd).st_rdev) <= 143
    except OSError:
        return False


def _configure(ser: serial.Serial, fd: int | None, s: PortSettings) -> PortSettings:
    """Apply settings to an open port (worker thread); return what is in effect, read back."""
    _set_line(ser, s)
    if fd is None:
        return _from_pyserial(ser)
    if s.xonxoff and _plain_posix(ser):  # the fd path does IXON itself (see DevicePort._flow_control)
        attrs = termios.tcgetattr(fd)
        attrs[0] &= ~termios.IXON
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    effective = _from_termios(termios2.get(fd), s)
    if (effective.bytesize, effective.parity) != (s.bytesize, s.parity):
        # Tell pyserial what the device kept, so its later reconfigures stop asking for the impossible.
        _set_line(ser, s.replace(bytesize=effective.bytesize, parity=effective.parity))
    return effective


def _set_line(ser: serial.Serial, s: PortSettings) -> None:
    """pyserial's setters, each of which reconfigures an open port.

    A PTY (and some USB adapters) silently keeps CS8 and no parity; glibc's tcsetattr notices and
    reports EINVAL although the kernel applied everything else. That is "the device cannot hold
    this", not a failure: carry on, and let the read-back say what is in effect.
    """
    changes = (
        ("baudrate", s.baudrate),
        ("bytesize", s.bytesize),
        ("parity", s.parity.value),  # pyserial's PARITY_* are the same letters
        ("stopbits", _PYSERIAL_STOPBITS[s.stopbits]),
        ("xonxoff", s.xonxoff),
        ("rtscts", s.rtscts),
    )
    for attr, value in changes:
        try:
            setattr(ser, attr, value)
        except termios.error as exc:
            if exc.args[0] != errno.EINVAL:
                raise


def _from_pyserial(ser: serial.Serial) -> PortSettings:
    stopbits = {v: k for k, v in _PYSERIAL_STOPBITS.items()}[ser.stopbits]
    return PortSettings(ser.baudrate, ser.bytesize, Parity(ser.parity), stopbits, bool(ser.xonxoff), bool(ser.rtscts))


def _from_termios(t: termios2.Termios2, requested: PortSettings) -> PortSettings:
    if not t.cflag & termios.PARENB:
        parity = Parity.NONE
    elif t.cflag & CMSPAR:
        parity = Parity.MARK if t.cflag & termios.PARODD else Parity.SPACE
    else:
        parity = Parity.ODD if t.cflag & termios.PARODD else Parity.EVEN
    stopbits = StopBits.TWO if t.cflag & termios.CSTOPB else StopBits.ONE
    if stopbits is StopBits.TWO and requested.stopbits is StopBits.ONE_POINT_FIVE:
        stopbits = StopBits.ONE_POINT_FIVE  # Linux has no 1.5: CSTOPB is what a UART turns into 1.5 at 5 bits
    try:
        return PortSettings(
            baudrate=t.baudrate or requested.baudrate,  # B0 ("hang up") is not a rate
            bytesize=_BYTESIZE[t.cflag & termios.CSIZE],
            parity=parity,
            stopbits=stopbits,
            xonxoff=bool(t.iflag & (termios.IXON | termios.IXOFF)),
            rtscts=bool(t.cflag & termios.CRTSCTS),
        )
    except SettingsError:
        return requested


def _set_lines(
    ser: serial.Serial, state: ControlState, request: ControlRequest
) -> tuple[ControlState, list[str], tuple[str, str] | None]:
    """Set what can be set (worker thread); return the new state, the lines the device lacks, any other failure."""
    missing: list[str] = []
    changes: dict[str, bool] = {}
    for attr, name, value in (("dtr", "DTR", request.dtr), ("rts", "RTS", request.rts)):
        if value is None:
            continue
        try:
            setattr(ser, attr, value)
            changes[attr] = value
        except OSError as exc:
            if exc.errno not in _NO_LINES:
                return ControlRequest(**changes).apply_to(state), missing, (name, _reason(exc))
            missing.append(name)
    if request.break_ is not None:
        try:
            ser.break_condition = request.break_
            changes["break_"] = request.break_
        except OSError as exc:
            if exc.errno not in _NO_LINES:
                return ControlRequest(**changes).apply_to(state), missing, ("BREAK", _reason(exc))
            missing.append("BREAK")
    return ControlRequest(**changes).apply_to(state), missing, None


def _close_if_opened(opening: asyncio.Future[PortSettings], ser: serial.Serial) -> None:
    """open() was cancelled while pyserial was opening in its thread: do not leak what it opened."""
    if not opening.cancelled() and opening.exception() is None:
        _quiet_close(ser)


def _quiet_close(ser: serial.Serial) -> None:
    with contextlib.suppress(Exception):  # closing a failed device may raise anything; it is gone either way
        ser.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, termios.error) and len(exc.args) == 2:
        return str(exc.args[1])
    return str(exc) or type(exc).__name__


def _open_error(url: str, exc: BaseException) -> PortError:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT:
        return PortUnavailable(f"no such device: {url}")
    if code in (errno.EACCES, errno.EPERM):
        return PortUnavailable(f"permission denied opening {url} (add the user to the dialout group)")
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text:
        return PortBusy(f"{url} is in use by another program")
    if code in (errno.ENXIO, errno.ENODEV):
        return PortUnavailable(f"no such device: {url} (the driver finds no hardware behind it)")
    if "Could not configure port" in text:
        return PortUnavailable(f"{url} is not a serial port: {text}")
    return PortUnavailable(f"cannot open {url}: {text}")
