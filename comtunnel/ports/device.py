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

With a ``trace`` (``hub --line-trace``, see :mod:`linetrace`), every line operation is recorded
with the time its device call returned, taken in the worker thread that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import struct
import termios
import time
from collections.abc import Callable
from typing import TypeVar

import serial
from serial import serialposix

from comtunnel.errors import PortBusy, PortError, PortGone, PortNotSupported, PortUnavailable
from comtunnel.ports import lineconf, links
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.device_io import THREAD_READ_TIMEOUT, FdIO, ThreadIO, is_pty, plain_posix
from comtunnel.ports.linetrace import PortTrace, describe_control, describe_purge
from comtunnel.ports.uucplock import UucpLock
from comtunnel.protocol.settings import (
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    Purge,
)

log = logging.getLogger(__name__)

MODEM_POLL_INTERVAL = 0.02
OUTPUT_STALL = 2.0  # a line change stops waiting for output that has not moved for this long
XON, XOFF = b"\x11", b"\x13"

T = TypeVar("T")


class DevicePort(SerialPort):
    """``settings`` and ``control`` are what the port opens with (None control lines stay off)."""

    def __init__(
        self,
        url: str,
        settings: PortSettings,
        control: ControlRequest,
        *,
        exclusive: bool = True,
        trace: PortTrace | None = None,
    ) -> None:
        self.url = url
        self.description = url
        self.settings = settings  # in effect (read back) once open
        self.control = ControlState(dtr=bool(control.dtr), rts=bool(control.rts))
        self.exclusive = exclusive
        self._lock: UucpLock | None = None  # the UUCP lock file, while the device is ours
        self.modem_supported = True
        self.uses_fd = False  # which data path open() chose
        self.output_stopped = False  # XOFF received (software flow control on the fd path)
        self._ser: serial.Serial | None = None
        self._ioctl_fd: int | None = None  # posix ports (spy:// included): for termios and modem reads
        self._io: FdIO | ThreadIO | None = None
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
        self._trace = trace

    # --- open / close ------------------------------------------------------------------------

    async def open(self, listener: PortListener) -> None:
        if self._ser is not None or self._closed:
            raise PortError(f"{self.url} was already opened once; make a new DevicePort")
        loop = asyncio.get_running_loop()
        ser = self._make_serial()
        opening = asyncio.ensure_future(asyncio.to_thread(_timed, functools.partial(self._open_blocking, ser)))
        try:
            self.settings, opened_at = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(lambda f: self._close_if_opened(f, ser))
            raise
        if self._closed:  # close() came while we were opening
            self._close_serial(ser)
            raise PortGone(f"{self.url} was closed while it was being opened")
        if isinstance(ser, serialposix.Serial):
            self._ioctl_fd = ser.fileno()
        self._ser, self._loop, self._listener = ser, loop, listener
        fd_path = self._ioctl_fd is not None and plain_posix(ser)
        self._io = FdIO(self, loop, ser.fileno()) if fd_path else ThreadIO(self, loop, ser)
        self.uses_fd = fd_path
        self._io.start(reading=not self._paused)
        self._traced(opened_at, f"open {self.settings.short()} DTR={int(self.control.dtr)} RTS={int(self.control.rts)}")
        self._poll_modem()

    def _make_serial(self) -> serial.Serial:
        try:
            ser = serial.serial_for_url(self.url, do_not_open=True)
            # Open with data bits and parity any tty holds (a PTY fails open() on 7E1, see lineconf.set_line);
            # the real ones follow at once through lineconf.configure, which tolerates their refusal.
            lineconf.set_line(ser, self.settings.replace(bytesize=8, parity=Parity.NONE))
        except (ValueError, OSError) as exc:
            raise PortUnavailable(f"cannot use {self.url!r}: {exc}") from None
        ser.dtr = self.control.dtr  # applied by open(): no edge at open
        ser.rts = self.control.rts
        ser.timeout = THREAD_READ_TIMEOUT
        if isinstance(ser, serialposix.Serial):
            ser.exclusive = self.exclusive  # flock: a second exclusive opener gets PortBusy
        return ser

    def _open_blocking(self, ser: serial.Serial) -> PortSettings:
        posix = isinstance(ser, serialposix.Serial)
        if posix and self.exclusive:  # as ser2net, minicom and picocom do: they honour it too
            self._lock = UucpLock.acquire(self.url)
        try:
            ser.open()
        except (OSError, ValueError, termios.error) as exc:  # SerialException is an OSError
            self._release_lock()
            error = lineconf.open_error(self.url, exc)
            if isinstance(error, PortBusy):
                error = _name_holders(self.url, error)
            raise error from None
        fd = ser.fileno() if posix else None
        if fd is not None and self.exclusive:
            with contextlib.suppress(OSError):  # no other open() of the tty, except by root
                fcntl.ioctl(fd, termios.TIOCEXCL)
        try:
            return lineconf.configure(ser, fd, self.settings, own_ixon=plain_posix(ser))
        except (OSError, ValueError, termios.error) as exc:
            self._close_serial(ser)
            raise PortUnavailable(f"cannot use {self.settings.short()} on {self.url}: {lineconf.reason(exc)}") from None

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
        if isinstance(io, ThreadIO):
            await asyncio.to_thread(io.join)
        self._close_serial(ser)
        self._traced(time.monotonic(), "close")

    def _close_serial(self, ser: serial.Serial) -> None:
        """Close the device: TIOCEXCL off first (it outlives us while another fd keeps the tty open,
        and would lock out our own next open), then the lock file."""
        if isinstance(ser, serialposix.Serial) and ser.is_open and self.exclusive:
            with contextlib.suppress(Exception):
                fcntl.ioctl(ser.fileno(), termios.TIOCNXCL)
        _quiet_close(ser)
        self._release_lock()

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _close_if_opened(self, opening: asyncio.Future[tuple[PortSettings, float]], ser: serial.Serial) -> None:
        """open() was cancelled while pyserial was opening in its thread: do not leak what it opened."""
        if not opening.cancelled() and opening.exception() is None:
            self._close_serial(ser)
        else:
            self._release_lock()

    def fail(self, reason: str, *, notify: bool = True) -> PortGone:
        """Close the port as lost (the data paths call this too); ``port_lost`` once, unless not ``notify``."""
        exc = PortGone(f"{self.url}: {reason}")
        if self._closed:
            return exc
        listener = self._listener
        self._halt()
        assert self._loop is not None
        self._traced(time.monotonic(), f"lost: {reason}")
        self._release = self._loop.create_task(self._release_resources())
        log.warning("%s", exc)
        if notify and listener is not None:
            listener.port_lost(exc)
        return exc

    # --- callbacks from the data paths (loop thread; device_io.IOOwner) --------------------------

    def received(self, data: bytes) -> None:
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

    def drained(self) -> None:
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
            raise self.fail(f"write failed: {lineconf.reason(exc)} (unplugged?)", notify=False) from None

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
        return self._ioctl_fd is not None and is_pty(self._ioctl_fd)

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
                effective, at = await asyncio.to_thread(
                    _timed, functools.partial(lineconf.configure, ser, self._ioctl_fd, settings, own_ixon=self.uses_fd)
                )
            except (OSError, ValueError, termios.error) as exc:
                self._traced(time.monotonic(), f"settings {settings.short()} failed: {lineconf.reason(exc)}")
                with contextlib.suppress(OSError, ValueError, termios.error):
                    await asyncio.to_thread(
                        lineconf.configure, ser, self._ioctl_fd, self.settings, own_ixon=self.uses_fd
                    )
                raise PortError(f"cannot set {settings.short()} on {self.url}: {lineconf.reason(exc)}") from None
        self._traced(at, f"settings {effective.short()}")
        self.settings = effective
        if self.output_stopped and not effective.xonxoff:
            self._set_output_stopped(False)  # as clearing IXON restarts a tty
        return effective

    async def set_control(self, request: ControlRequest) -> ControlState:
        ser = self._require_open()
        async with self._ops:
            await self._output_sent()
            (state, missing, error), at = await asyncio.to_thread(
                _timed, functools.partial(lineconf.set_lines, ser, self.control, request)
            )
        if self._trace is not None:
            what = describe_control(request)
            if error is not None:
                what += f" failed: {error[0]}: {error[1]}"
            elif missing:
                what += f" failed: no {'/'.join(missing)}"
            self._traced(at, what)
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
            self.drained()  # what was accepted will never be written: let the sender have its credit
        async with self._ops:
            try:
                if which & Purge.RECEIVE:
                    await asyncio.to_thread(ser.reset_input_buffer)
                if which & Purge.TRANSMIT:
                    await asyncio.to_thread(ser.reset_output_buffer)
            except (OSError, ValueError, termios.error) as exc:
                self._traced(time.monotonic(), f"{describe_purge(which)} failed: {lineconf.reason(exc)}")
                raise PortError(f"cannot purge {self.url}: {lineconf.reason(exc)}") from None
        self._traced(time.monotonic(), describe_purge(which))

    def modem_lines(self) -> ModemLines:
        return self._modem

    def _traced(self, when: float, what: str) -> None:
        if self._trace is not None:
            self._trace(when, what)

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
            if isinstance(exc, NotImplementedError) or exc.errno in lineconf.NO_LINES:
                self.modem_supported = False
                log.info("%s has no modem status lines; not watching them", self.url)
            else:
                self.fail(f"cannot read the modem lines: {lineconf.reason(exc)} (unplugged?)")
            return
        if lines != self._modem or not self._modem_reported:
            self._modem = lines
            self._modem_reported = True
            if self._listener is not None:
                self._listener.port_modem(lines)

    def _read_modem(self) -> ModemLines:
        if self._ioctl_fd is not None:
            return lineconf.modem_from_tiocm(
                struct.unpack("I", fcntl.ioctl(self._ioctl_fd, termios.TIOCMGET, bytes(4)))[0]
            )
        lines = ModemLines.NONE
        ser = self._ser
        assert ser is not None
        for present, line in ((ser.cts, ModemLines.CTS), (ser.dsr, ModemLines.DSR), (ser.ri, ModemLines.RI)):
            if present:
                lines |= line
        return lines | ModemLines.CD if ser.cd else lines


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` and the time it returned, both in the worker thread: the moment the device has it."""
    result = call()
    return result, time.monotonic()


def _quiet_close(ser: serial.Serial) -> None:
    with contextlib.suppress(Exception):  # closing a failed device may raise anything; it is gone either way
        ser.close()


def _name_holders(url: str, error: PortBusy) -> PortBusy:
    """'... is in use by another program': say which, when /proc shows it."""
    holders = links.holders(os.path.realpath(url))
    if not holders:
        return error
    names = ", ".join(f"{name} (pid {pid})" for pid, name in holders[:3])
    return PortBusy(f"{url} is in use by {names}")
