"""Two devices: an NMEA GPS that talks at a paced baud rate, and an echo device."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import tty
from collections.abc import Iterator

MAX_PENDING = 256 * 1024


class EmulatedDevice:
    """A PTY pair whose master side is driven by this object on the running loop."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        """Device output; what the PTY cannot take now waits, up to a bound, then the oldest is lost."""
        self._pending += data
        if len(self._pending) > MAX_PENDING:
            self.dropped += len(self._pending) - MAX_PENDING
            del self._pending[:-MAX_PENDING]
        self._flush()

    def _flush(self) -> None:
        try:
            while self._pending:
                n = os.write(self.master, self._pending)
                self.bytes_out += n
                del self._pending[:n]
        except BlockingIOError:
            self._loop.add_writer(self.master, self._flush)
            return
        except OSError:
            self._pending.clear()
        self._loop.remove_writer(self.master)

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        self._loop.remove_writer(self.master)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class EchoDevice(EmulatedDevice):
    """Sends back every byte it receives, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._loop.add_reader(self.master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:
            self._loop.remove_reader(self.master)
            return
        self.bytes_in += len(data)
        self.write(data)


def nmea_sentences(start: dt.datetime | None = None) -> Iterator[bytes]:
    """GGA and RMC sentences with valid checksums, one fix a second, moving slowly north-east."""
    now = start or dt.datetime.now(dt.UTC)
    lat, lon = 4807.038, 1131.000
    while True:
        stamp = now.strftime("%H%M%S.00")
        date = now.strftime("%d%m%y")
        yield _nmea(f"GPGGA,{stamp},{lat:09.3f},N,{lon:010.3f},E,1,08,0.9,545.4,M,46.9,M,,")
        yield _nmea(f"GPRMC,{stamp},A,{lat:09.3f},N,{lon:010.3f},E,022.4,084.4,{date},003.1,W")
        now += dt.timedelta(seconds=1)
        lat += 0.001
        lon += 0.001


def _nmea(body: str) -> bytes:
    checksum = functools.reduce(lambda a, b: a ^ b, body.encode(), 0)
    return f"${body}*{checksum:02X}\r\n".encode()


class GpsDevice(EmulatedDevice):
    """Streams NMEA at the pace of ``baudrate`` (10 bits a byte, like 8N1 on a wire)."""

    def __init__(self, baudrate: int = 9600, interval: float = 0.2) -> None:
        super().__init__()
        self._bytes_per_tick = max(1, int(baudrate / 10 * interval))
        self._interval = interval
        self._sentences = nmea_sentences()
        self._buffer = b""
        self._task = self._loop.create_task(self._run())
        self._loop.add_reader(self.master, self._discard_input)

    async def _run(self) -> None:
        while True:
            # A GPS sends one burst a second: about a third of the line's capacity at 9600 baud.
            while len(self._buffer) < self._bytes_per_tick:
                self._buffer += next(self._sentences)
            chunk, self._buffer = self._buffer[: self._bytes_per_tick // 3], self._buffer[self._bytes_per_tick // 3 :]
            self.write(chunk)
            await asyncio.sleep(self._interval)

    def _discard_input(self) -> None:
        try:
            self.bytes_in += len(os.read(self.master, 65536))
        except OSError:
            self._loop.remove_reader(self.master)

    def close(self) -> None:
        self._task.cancel()
        super().close()
