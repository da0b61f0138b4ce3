"""A real serial device (or any pyserial URL) as a :class:`SerialPort`.

Two data paths, chosen at open:

* A device with a file descriptor (a tty, a PTY device) is driven like an asyncio transport:
  non-blocking fd, ``add_reader`` with 64 KiB reads, writes straight to the fd and the rest
  buffered behind ``add_writer``. No threads, no per-read futures.
* pyserial URLs without a usable fd (``loop://``, ``socket://``, ``spy://`` whose value is its
  log) run pyserial's blocking calls in one reader thread and one writer thread, so ordering is
  kept and the event loop never blocks.

DTR/RTS are set *before* ``open()`` (pyserial applies them at open) so opening never pulses DTR
unless the client asked for it: an Arduino resets on that edge. Modem input lines are polled
(there is no portable change notification) and reported on change.
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
from collections import deque
from typing import Any

import serial

from comtunnel.errors import PortBusy, PortError, PortGone, PortNotSupported, PortUnavailable
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.fdio import FdWriter
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge

log = logging.getLogger(__name__)

READ_SIZE = 65536
MODEM_POLL_INTERVAL = 0.02
_NO_MODEM = {errno.ENOTTY, errno.EINVAL, errno.ENOTSUP}
_PARITY = {
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}
_STOPBITS = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE, "2": serial.STOPBITS_TWO}
_TIOCM = (
    (termios.TIOCM_CTS, ModemLines.CTS),
    (termios.TIOCM_DSR, ModemLines.DSR),
    (termios.TIOCM_RI, ModemLines.RI),
    (termios.TIOCM_CD, ModemLines.CD),
)


class DevicePort(SerialPort):
    def __init__(self, url: str, settings: PortSettings, control: ControlRequest, *, exclusive: bool = True) -> None:
        self.url = url
        self.description = url
        self.settings = settings
        self.control = ControlState(dtr=bool(control.dtr), rts=bool(control.rts))
        self.exclusive = exclusive
        self.modem_supported = True
        self._ser: Any = None
        self._listener: PortListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._writer_fd: FdWriter | None = None
        self._reading = True
        self._closed = False
        self._modem = ModemLines.NONE
        self._poll: asyncio.TimerHandle | None = None
        # thread path
        self._threaded = False
        self._resume = threading.Event()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._write_queue: deque[bytes] = deque()
        self._write_ready = threading.Condition()
        self._queued = 0

    # --- open / close -----------------------------------------------------------------------

    async def open(self, listener: PortListener) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            ser = serial.serial_for_url(self.url, do_not_open=True)
        except (ValueError, serial.SerialException) as exc:
            raise PortUnavailable(f"cannot use {self.url!r}: {exc}") from None
        try:
            self._configure(ser, self.settings)
        except (ValueError, serial.SerialException) as exc:
            raise PortUnavailable(f"{self.url}: cannot use {self.settings.short()}: {exc}") from None
        ser.dtr = self.control.dtr
        ser.rts = self.control.rts
        if self.exclusive and type(ser).__module__ == "serial.serialposix":
            ser.exclusive = True
        try:
            await asyncio.to_thread(ser.open)
        except (serial.SerialException, OSError) as exc:
            raise _open_error(self.url, exc) from None
        self._ser = ser
        self._listener = listener
        if type(ser).__module__ == "serial.serialposix":
            self._fd = ser.fileno()
            os.set_blocking(self._fd, False)
            self._writer_fd = FdWriter(self._loop, self._fd, self._drained, self._write_failed)
            self._loop.add_reader(self._fd, self._on_readable)
        else:
            self._start_threads()
        self._poll_modem()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        if self._poll is not None:
            self._poll.cancel()
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        if self._writer_fd is not None:
            self._writer_fd.clear()
        if self._threaded:
            self._stop.set()
            self._resume.set()
            with self._write_ready:
                self._write_ready.notify_all()
            for thread in (self._reader, self._writer):
                if thread is not None:
                    await asyncio.to_thread(thread.join, 2)
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()

    def _lost(self, exc: PortError) -> None:
        listener = self._listener
        if self._closed or listener is None:
            return
        assert self._loop is not None
        self._loop.create_task(self.close())
        self._listener = None
        listener.port_lost(exc)

    # --- fd data path ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(PortGone(f"{self.url} failed: {exc.strerror} (unplugged?)"))
            return
        if not data:
            self._lost(PortGone(f"{self.url} was closed by the device"))
            return
        if self._listener is not None:
            self._listener.port_data(data)

    # --- thread data path -----------------------------------------------------------------------

    def _start_threads(self) -> None:
        self._threaded = True
        self._ser.timeout = 0.05
        self._resume.set()
        self._reader = threading.Thread(target=self._read_thread, name=f"read {self.url}", daemon=True)
        self._writer = threading.Thread(target=self._write_thread, name=f"write {self.url}", daemon=True)
        self._reader.start()
        self._writer.start()

    def _read_thread(self) -> None:
        assert self._loop is not None
        while not self._stop.is_set():
            self._resume.wait()
            if self._stop.is_set():
                break
            try:
                data = self._ser.read(max(1, min(self._ser.in_waiting, READ_SIZE)))
            except Exception as exc:  # pyserial backends raise many types; any is a dead port
                if not self._stop.is_set():
                    self._loop.call_soon_threadsafe(self._lost, PortGone(f"{self.url} failed: {exc}"))
                return
            if data:
                self._loop.call_soon_threadsafe(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if self._listener is not None:
            self._listener.port_data(data)

    def _write_thread(self) -> None:
        assert self._loop is not None
        while True:
            with self._write_ready:
                while not self._write_queue and not self._stop.is_set():
                    self._write_ready.wait()
                if self._stop.is_set():
                    return
                data = self._write_queue.popleft()
            try:
                self._ser.write(data)
            except Exception as exc:
                self._loop.call_soon_threadsafe(self._lost, PortGone(f"{self.url} failed: {exc}"))
                return
            self._loop.call_soon_threadsafe(self._written, len(data))

    def _drained(self) -> None:
        if self._listener is not None:
            self._listener.port_drained()

    def _write_failed(self, exc: OSError) -> None:
        self._lost(PortGone(f"{self.url} failed: {exc.strerror} (unplugged?)"))

    def _written(self, size: int) -> None:
        self._queued -= size
        if self._queued == 0 and self._listener is not None:
            self._listener.port_drained()

    # --- SerialPort -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed or self._ser is None:
            raise PortGone(f"{self.url} is closed")
        if self._threaded:
            self._queued += len(data)
            with self._write_ready:
                self._write_queue.append(data)
                self._write_ready.notify()
            return
        assert self._writer_fd is not None
        try:
            self._writer_fd.write(data)
        except OSError as exc:
            raise PortGone(f"{self.url} failed: {exc.strerror} (unplugged?)") from None

    @property
    def write_buffer_size(self) -> int:
        return self._queued if self._threaded else self._writer_fd.size if self._writer_fd else 0

    def pause_reading(self) -> None:
        if self._reading and not self._closed:
            self._reading = False
            if self._threaded:
                self._resume.clear()
            elif self._fd is not None and self._loop is not None:
                self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closed:
            self._reading = True
            if self._threaded:
                self._resume.set()
            elif self._fd is not None and self._loop is not None:
                self._loop.add_reader(self._fd, self._on_readable)

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        ser = self._require_open()
        try:
            self._configure(ser, settings)
        except (ValueError, serial.SerialException, OSError) as exc:
            with contextlib.suppress(Exception):
                self._configure(ser, self.settings)
            raise PortError(f"cannot set {settings.short()} on {self.url}: {exc}") from None
        self.settings = settings
        return settings

    @staticmethod
    def _configure(ser: Any, s: PortSettings) -> None:
        ser.baudrate = s.baudrate
        ser.bytesize = s.bytesize
        ser.parity = _PARITY[s.parity.value]
        ser.stopbits = _STOPBITS[s.stopbits.value]
        ser.xonxoff = s.xonxoff
        ser.rtscts = s.rtscts

    async def set_control(self, request: ControlRequest) -> ControlState:
        ser = self._require_open()
        state = self.control
        missing = []
        for attr, field, value in (
            ("dtr", "dtr", request.dtr),
            ("rts", "rts", request.rts),
            ("break_condition", "break_", request.break_),
        ):
            if value is None:
                continue
            try:
                setattr(ser, attr, value)
            except (OSError, serial.SerialException) as exc:
                if getattr(exc, "errno", None) in _NO_MODEM or "Inappropriate ioctl" in str(exc):
                    missing.append(attr.split("_")[0].upper())
                    continue
                raise PortError(f"cannot set {attr} on {self.url}: {exc}") from None
            state = ControlState(**{**_fields(state), field: value})
        self.control = state
        if missing:
            raise PortNotSupported(f"{self.url} has no {'/'.join(missing)} line (not a serial port?)")
        return state

    async def purge(self, which: Purge) -> None:
        ser = self._require_open()
        try:
            if which & Purge.RECEIVE:
                ser.reset_input_buffer()
            if which & Purge.TRANSMIT:
                ser.reset_output_buffer()
        except (OSError, serial.SerialException) as exc:
            raise PortError(f"cannot purge {self.url}: {exc}") from None
        if which & Purge.TRANSMIT and self._writer_fd is not None:
            self._writer_fd.clear()

    def modem_lines(self) -> ModemLines:
        return self._modem

    def _require_open(self) -> Any:
        if self._closed or self._ser is None:
            raise PortGone(f"{self.url} is closed")
        return self._ser

    # --- modem lines ----------------------------------------------------------------------------

    def _read_modem(self) -> ModemLines:
        if self._fd is not None:
            bits = struct.unpack("I", fcntl.ioctl(self._fd, termios.TIOCMGET, struct.pack("I", 0)))[0]
            lines = ModemLines.NONE
            for bit, line in _TIOCM:
                if bits & bit:
                    lines |= line
            return lines
        ser = self._ser
        lines = ModemLines.NONE
        for attr, line in (
            ("cts", ModemLines.CTS),
            ("dsr", ModemLines.DSR),
            ("ri", ModemLines.RI),
            ("cd", ModemLines.CD),
        ):
            if getattr(ser, attr):
                lines |= line
        return lines

    def _poll_modem(self) -> None:
        if self._closed or not self.modem_supported:
            return
        try:
            lines = self._read_modem()
        except (OSError, serial.SerialException, NotImplementedError) as exc:
            if getattr(exc, "errno", None) in _NO_MODEM or isinstance(exc, NotImplementedError):
                self.modem_supported = False
                log.info("%s has no modem status lines; not watching them", self.url)
                return
            self._lost(PortGone(f"{self.url} failed: {exc}"))
            return
        if lines != self._modem or self._poll is None:
            self._modem = lines
            if self._listener is not None:
                self._listener.port_modem(lines)
        assert self._loop is not None
        self._poll = self._loop.call_later(MODEM_POLL_INTERVAL, self._poll_modem)


def _fields(state: ControlState) -> dict[str, bool]:
    return {"dtr": state.dtr, "rts": state.rts, "break_": state.break_}


def _open_error(url: str, exc: BaseException) -> PortError:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return PortUnavailable(f"no such device: {url}")
    if code == errno.EACCES or "Permission denied" in text:
        return PortUnavailable(f"permission denied opening {url} (add the user to the 'dialout' group)")
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text:
        return PortBusy(f"{url} is in use by another program")
    return PortUnavailable(f"cannot open {url}: {text}")
