"""DevicePort's two data paths (see device.py's theory of operation), behind one small interface.

:class:`FdIO` drives a plain posix fd on the event loop; :class:`ThreadIO` runs pyserial's own blocking
read()/write() in one thread each. Both report to their owner (:class:`IOOwner`) on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import threading
import time
from collections import deque
from typing import Any, Protocol

import serial
from serial import serialposix

from comtunnel.ports import lineconf
from comtunnel.ports.fdio import FdWriter
from comtunnel.ports.quantum import QUANTUM, SHORT_READ

READ_SIZE = 65536
WRITE_CHUNK = 16384  # thread path: writes are joined or split to this; a closing writer finishes one chunk
THREAD_READ_TIMEOUT = 0.05  # how long a paused or closing reader thread can take to notice (pyserial's timeout)
JOIN_TIMEOUT = 1.0
ABANDON_CHECK = 0.5  # how often an idle thread checks that its event loop still exists


class IOOwner(Protocol):
    """What a data path reports to (DevicePort), always on the loop thread."""

    @property
    def url(self) -> str: ...

    def received(self, data: bytes) -> None:
        """Bytes read from the device."""

    def drained(self) -> None:
        """The write buffer became empty."""

    def fail(self, reason: str) -> object:
        """Reading or writing failed: the port is lost."""


class FdIO:
    """The fd data path: a non-blocking fd on the event loop, buffered like an asyncio transport."""

    def __init__(self, port: IOOwner, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._port = port
        self._loop = loop
        self._fd = fd
        self._writer = FdWriter(loop, fd, port.drained, self._write_failed)

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
        now = time.monotonic()
        quantum = QUANTUM.size(self, now)
        while size < quantum:
            try:
                data = os.read(self._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if chunks:
                    self._port.received(b"".join(chunks))
                self._port.fail(f"read failed: {lineconf.reason(exc)} (unplugged?)")
                return
            if not data:
                hung_up = True
                break
            chunks.append(data)
            size += len(data)
            if len(data) < SHORT_READ:
                break
        if chunks:
            QUANTUM.read(self, now)
            self._port.received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            return
        if not hung_up:
            return
        # A tty read of 0 bytes is a hang-up, or (VMIN=0) a wake-up whose data someone else took.
        try:
            termios.tcgetattr(self._fd)
        except (termios.error, OSError):
            self._port.fail("the device hung up (unplugged?)")

    def write(self, data: bytes) -> None:
        """Raises OSError when the device has failed."""
        self._writer.write(data)

    def _write_failed(self, exc: OSError) -> None:
        self._port.fail(f"write failed: {lineconf.reason(exc)} (unplugged?)")

    def purge_output(self) -> bool:
        """Drop unwritten bytes; True if there were any."""
        return self._writer.clear()


class ThreadIO:
    """The thread data path: pyserial's own blocking read()/write(), one thread each."""

    def __init__(self, port: IOOwner, loop: asyncio.AbstractEventLoop, ser: serial.Serial) -> None:
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
            self._port.drained()

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
                self._report(self._port.fail, f"read failed: {lineconf.reason(exc)}")
                return
            if data:
                self._report(self._port.received, data)

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
                self._report(self._port.fail, f"write failed: {lineconf.reason(exc)}")
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


def plain_posix(ser: serial.Serial) -> bool:
    """A posix port whose read/write are posix's own, so the fd can be driven directly."""
    cls = type(ser)
    return cls.read is serialposix.Serial.read and cls.write is serialposix.Serial.write


def is_pty(fd: int) -> bool:
    """A PTY slave standing in for a device (Linux: majors 136-143)."""
    try:
        return 136 <= os.major(os.fstat(fd).st_rdev) <= 143
    except OSError:
        return False
