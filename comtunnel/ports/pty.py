"""A virtual serial port for unmodified applications: a Linux PTY behind a stable symlink.

What the application does to the port arrives here without polling (see shared notes on PTYs):

* data: the master side, in packet mode (TIOCPKT), so every read starts with a status byte;
* termios changes: EXTPROC on the slave makes the kernel flag each tcsetattr on the master
  (TIOCPKT_IOCTL); we read the slave's termios2 then (exact custom baud rates). If the app clears
  EXTPROC, a 50 ms poll takes over;
* tcflush: TIOCPKT_FLUSHREAD / FLUSHWRITE;
* open and close: inotify IN_OPEN / IN_CLOSE_* on the /dev/pts/N node.

We keep one slave fd open for our whole life, so the master never reads EIO when the application
closes, the symlink stays valid across reopen, and we can read the app's termios at any time.
A PTY cannot hold parity or data bits (Linux forces CS8, clears PARENB), so those come from the
link's fixed settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import grp
import logging
import os
import pwd
import struct
import termios
import time
from collections.abc import Callable
from pathlib import Path

from comtunnel.errors import PortGone, UsageError
from comtunnel.ports import inotify, links, termios2
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.fdio import FdWriter
from comtunnel.ports.quantum import QUANTUM, SHORT_READ
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge, StopBits
from comtunnel.specs import LinkAccess

log = logging.getLogger(__name__)

READ_SIZE = 65536 + 1  # one packet-mode status byte + data
POLL_INTERVAL = 0.05
PEEK_INTERVAL = 0.02


class PtyPort(SerialPort):
    def __init__(self, link: Path | None, fixed: PortSettings, *, access: LinkAccess | None = None) -> None:
        """``access``: the PTY's mode, group and owner, for applications of other users."""
        self.link = link
        self.access = access or LinkAccess()
        self.fixed = fixed
        self.settings = fixed
        self.control = ControlState()
        self.modem = ModemLines.NONE
        self.app_is_open = False
        self.dropped_bytes = 0
        self.slave_path = ""
        self.description = str(link)
        self._master = -1
        self._slave = -1
        self._watch: int | None = None  # our watch in the process's one inotify instance
        self._listener: PortListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: FdWriter | None = None
        self._reading = True
        self._opens = 0
        self._poll: asyncio.TimerHandle | None = None
        self._peek: asyncio.TimerHandle | None = None  # while paused: the app's flushes and termios
        self._closed = False
        self._own_flush = False  # we flushed the app's input ourselves: that FLUSHREAD is not the app's

    async def open(self, listener: PortListener) -> None:
        self._loop = asyncio.get_running_loop()
        if self.link is not None:
            links.check_free(self.link)  # before any PTY exists; make_link checks again
        self._master, self._slave = os.openpty()
        self.slave_path = os.ttyname(self._slave)
        try:
            _give_access(self._slave, self.slave_path, self.access)
        except UsageError:
            await self.close()
            raise
        t = termios2.get(self._slave)
        termios2.make_raw(t)
        t.lflag |= termios2.EXTPROC
        self._encode(t, self.fixed)
        termios2.set(self._slave, t)
        self.settings = self._decode(termios2.get(self._slave))
        fcntl.ioctl(self._master, termios2.TIOCPKT, struct.pack("i", 1))
        os.set_blocking(self._master, False)
        self._watch = _watch(self._loop, Path(self.slave_path), self._on_inotify)
        self._listener = listener
        self._writer = FdWriter(self._loop, self._master, self._drained, self._fail)
        self._loop.add_reader(self._master, self._on_readable)
        if self.link is not None:
            try:
                links.make_link(self.link, self.slave_path)
            except UsageError:
                link, self.link = self.link, None  # not ours: close() must leave it alone
                await self.close()
                self.link = link
                raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        if self._peek is not None:
            self._peek.cancel()
        if self._poll is not None:
            self._poll.cancel()
        if self._loop is not None:
            if self._master >= 0:
                self._loop.remove_reader(self._master)
            if self._writer is not None:
                self._writer.clear()
            if self._watch is not None:
                _unwatch(self._loop, self._watch)
        if self.link is not None and self.slave_path:
            links.remove_link(self.link, self.slave_path)
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # --- settings <-> termios ------------------------------------------------------------------

    def _encode(self, t: termios2.Termios2, s: PortSettings) -> None:
        t.set_baudrate(s.baudrate)
        t.cflag = (t.cflag | termios.CSTOPB) if s.stopbits is not StopBits.ONE else (t.cflag & ~termios.CSTOPB)
        t.cflag = (t.cflag | termios.CRTSCTS) if s.rtscts else (t.cflag & ~termios.CRTSCTS)
        flow = termios.IXON | termios.IXOFF
        t.iflag = (t.iflag | flow) if s.xonxoff else (t.iflag & ~flow)

    def _decode(self, t: termios2.Termios2) -> PortSettings:
        stop: StopBits
        if t.cflag & termios.CSTOPB:
            stop = self.fixed.stopbits if self.fixed.stopbits is not StopBits.ONE else StopBits.TWO
        else:
            stop = StopBits.ONE
        return self.fixed.replace(
            baudrate=t.baudrate or self.fixed.baudrate,
            stopbits=stop,
            rtscts=bool(t.cflag & termios.CRTSCTS),
            xonxoff=bool(t.iflag & (termios.IXON | termios.IXOFF)),
        )

    def _check_termios(self) -> None:
        try:
            t = termios2.get(self._slave)
        except OSError:
            return
        settings = self._decode(t)
        if settings != self.settings:
            self.settings = settings
            if self._listener is not None:
                self._listener.app_settings(settings)
        self._arm_poll(not t.lflag & termios2.EXTPROC)

    def _arm_poll(self, needed: bool) -> None:
        """Poll termios only while the app has cleared EXTPROC (then no change signals come)."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if needed and self.app_is_open and not self._closed and self._loop is not None:
            self._poll = self._loop.call_later(POLL_INTERVAL, self._check_termios)

    # --- events from the kernel ------------------------------------------------------------------

    def _on_readable(self) -> None:
        """Drain what is there (a PTY hands out 4-16 KiB per read) and pass it on as one chunk:
        a larger frame and TLS record per wake-up instead of one per read. Control packets are
        handled in order, after the data that came before them."""
        chunks: list[bytes] = []
        now = time.monotonic()
        budget = QUANTUM.size(self, now)
        while budget > 0:
            try:
                data = os.read(self._master, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EIO:  # cannot happen while we hold the slave; be safe
                    break
                self._deliver(chunks, now)
                self._fail(exc)
                return
            if not data or self._listener is None:
                break
            if data[0] == 0:
                if len(data) > 1:
                    if not self.app_is_open:
                        self._app_opened()  # it writes, so it is open: inotify has not told us yet
                    chunks.append(data[1:])
                    budget -= len(data)
                if len(data) < SHORT_READ:
                    break  # a control packet behind it makes the master readable again
                continue
            self._deliver(chunks, now)
            chunks = []
            self._on_control_packet(data[0])
        self._deliver(chunks, now)

    def _deliver(self, chunks: list[bytes], now: float) -> None:
        if chunks and self._listener is not None:
            QUANTUM.read(self, now)
            self._listener.port_data(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _on_control_packet(self, status: int) -> None:
        assert self._listener is not None
        if status & termios2.TIOCPKT_IOCTL:
            self._check_termios()
        if status & termios2.TIOCPKT_FLUSHREAD:
            if self._own_flush:
                self._own_flush = False  # ours, at open: purging the device would lose its live output
            else:
                self._listener.app_purge(Purge.RECEIVE)  # the app dropped unread input: device->app data
        if status & termios2.TIOCPKT_FLUSHWRITE:
            self._listener.app_purge(Purge.TRANSMIT)  # the app dropped its unsent output

    def _on_inotify(self, mask: int) -> None:
        if mask & inotify.IN_OPEN:
            self._opens += 1
            if self._opens == 1 and not self.app_is_open:
                self._app_opened()
        elif mask & (inotify.IN_CLOSE_WRITE | inotify.IN_CLOSE_NOWRITE):
            self._opens = max(0, self._opens - 1)
            if self._opens == 0 and self.app_is_open:
                self.app_is_open = False
                self._arm_poll(False)
                if self._listener is not None:
                    self._listener.app_open(False)

    def _app_opened(self) -> None:
        self.app_is_open = True
        try:
            termios.tcflush(self._slave, termios.TCIFLUSH)  # nothing a previous app left unread
            self._own_flush = True
        except OSError:
            pass
        if self._writer is not None and self._writer.clear():
            self._drained()
        if self._listener is not None:
            self._listener.app_open(True)
        self._check_termios()

    def _drained(self) -> None:
        if self._listener is not None:
            self._listener.port_drained()

    def _fail(self, exc: OSError) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.port_lost(PortGone(f"virtual port {self.link}: {exc.strerror}"))

    # --- SerialPort -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise PortGone(f"virtual port {self.link} is closed")
        if not self.app_is_open:
            self.dropped_bytes += len(data)  # like a closed tty: nobody is there to receive
            return
        assert self._writer is not None
        try:
            self._writer.write(data)
        except OSError as exc:
            raise PortGone(f"virtual port {self.link}: {exc.strerror}") from None

    @property
    def write_buffer_size(self) -> int:
        return self._writer.size if self._writer is not None else 0

    def pause_reading(self) -> None:
        if self._reading and not self._closed and self._loop is not None:
            self._reading = False
            self._loop.remove_reader(self._master)
            self._peek = self._loop.call_later(PEEK_INTERVAL, self._peek_status)

    def resume_reading(self) -> None:
        if not self._reading and not self._closed and self._loop is not None:
            self._reading = True
            if self._peek is not None:
                self._peek.cancel()
                self._peek = None
            self._loop.add_reader(self._master, self._on_readable)

    def _peek_status(self) -> None:
        """While paused the app's data stays in the PTY, but its tcflush/tcsetattr must not wait for
        our window: a 1-byte packet-mode read returns a pending status and consumes no data."""
        self._peek = None
        if self._reading or self._closed or self._loop is None:
            return
        try:
            status = os.read(self._master, 1)
        except OSError:
            status = b""
        if status and status[0] and self._listener is not None:
            self._on_control_packet(status[0])
        if not self._reading and not self._closed:
            self._peek = self._loop.call_later(PEEK_INTERVAL, self._peek_status)

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        t = termios2.get(self._slave)
        self._encode(t, settings)
        self.fixed = self.fixed.replace(bytesize=settings.bytesize, parity=settings.parity)
        self.settings = self._decode(t)  # set first, so the IOCTL signal it causes is not news
        termios2.set(self._slave, t)
        return self.settings

    async def set_control(self, request: ControlRequest) -> ControlState:
        self.control = request.apply_to(self.control)
        return self.control

    async def purge(self, which: Purge) -> None:
        if which & Purge.RECEIVE:
            with contextlib.suppress(OSError):
                termios.tcflush(self._slave, termios.TCIFLUSH)
                self._own_flush = True
            if self._writer is not None and self._writer.clear():
                self._drained()

    @property
    def holds_back(self) -> bool:
        return True  # a paused PTY blocks the application's writes, as a full tty does

    def modem_lines(self) -> ModemLines:
        return self.modem

    def set_modem_lines(self, lines: ModemLines) -> None:
        self.modem = lines

    def set_output_stopped(self, stopped: bool) -> None:
        """The device sent XOFF (or XON): the application's writes block (or go on), as they would
        on a local port whose tty received it."""
        with contextlib.suppress(OSError, termios.error):
            termios.tcflow(self._slave, termios.TCOOFF if stopped else termios.TCOON)


def _give_access(fd: int, path: str, access: LinkAccess) -> None:
    """The PTY's owner, group and mode, so that other users' applications may open it."""
    uid = gid = -1
    if access.owner is not None:
        try:
            uid = pwd.getpwnam(access.owner).pw_uid
        except KeyError:
            raise UsageError(f"no user named {access.owner!r}") from None
    if access.group is not None:
        try:
            gid = grp.getgrnam(access.group).gr_gid
        except KeyError:
            raise UsageError(f"no group named {access.group!r}") from None
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        if access.mode is not None:
            os.fchmod(fd, access.mode)
    except PermissionError:
        who = f"owner {access.owner}" if access.owner else f"group {access.group}"
        raise UsageError(
            f"cannot give {path} {who}: only root may give a file away (or the user must be in that group)"
        ) from None


# --- one inotify instance per event loop, shared by its virtual ports ------------------------------

_OPENS_AND_CLOSES = inotify.IN_OPEN | inotify.IN_CLOSE_WRITE | inotify.IN_CLOSE_NOWRITE
_watches: dict[asyncio.AbstractEventLoop, inotify.Watches] = {}


def _watch(loop: asyncio.AbstractEventLoop, path: Path, callback: Callable[[int], None]) -> int:
    """Watch a PTY's opens and closes in the loop's inotify instance (made on first use)."""
    watches = _watches.get(loop)
    if watches is None:
        watches = _watches[loop] = inotify.Watches()
        loop.add_reader(watches.fd, watches.dispatch)
    try:
        return watches.add(path, _OPENS_AND_CLOSES, callback)
    except OSError:
        _release_if_unused(loop, watches)
        raise


def _unwatch(loop: asyncio.AbstractEventLoop, wd: int) -> None:
    watches = _watches.get(loop)
    if watches is not None:
        watches.remove(wd)
        _release_if_unused(loop, watches)


def _release_if_unused(loop: asyncio.AbstractEventLoop, watches: inotify.Watches) -> None:
    """The last port closed: no instance (and no reader) outlives the ports, or a closed loop."""
    if not watches:
        del _watches[loop]
        if not loop.is_closed():
            loop.remove_reader(watches.fd)
        watches.close()
