"""A port whose far end is this process's stdin and stdout: what ``comtunnel console`` binds a
channel to instead of a PTY.

Reads are large (64 KiB) and fd-driven (``add_reader``); writes go through :class:`FdWriter`, so
a slow terminal or a reader that stops holds the tunnel back by the window, as any port does.
With an :class:`~comtunnel.protocol.escape.EscapeParser`, typed bytes pass through it and its
commands go to ``on_command`` in their place among the data; without one, stdin is a plain byte
stream. The terminal's mode (raw or not) belongs to the caller, which must restore it.

stdin and stdout may be pipes, terminals or plain files (``< /dev/null``): fds that epoll refuses
(files, /dev/null) never block, so they are read from the loop without a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from comtunnel.errors import PortGone
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.fdio import FdWriter
from comtunnel.protocol.escape import Data, EscapeParser, Item
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge

READ_SIZE = 65536
#: With escape keys on, stdin is read while the channel is paused (so Ctrl-] q works while
#: connecting); typed data waits here, up to this much, before reading stops too.
HELD_LIMIT = 65536

Trace = Callable[[str, bytes], None]


class StdioPort(SerialPort):
    description = "stdin/stdout"

    def __init__(
        self,
        *,
        stdin: int = 0,
        stdout: int = 1,
        escape: EscapeParser | None = None,
        on_command: Callable[[Item], None] | None = None,
        on_eof: Callable[[], None] | None = None,
        read_only: bool = False,
        trace: Trace | None = None,
    ) -> None:
        """``read_only``: typed data is dropped (a monitor); commands still go to ``on_command``.
        ``trace(direction, data)`` sees every chunk: ``"out"`` towards the device, ``"in"`` from it."""
        self._in, self._out = stdin, stdout
        self._escape = escape
        self._on_command = on_command or (lambda item: None)
        self._on_eof = on_eof or (lambda: None)
        self._read_only = read_only
        self._trace = trace
        self._listener: PortListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: FdWriter | None = None
        self._blocking: dict[int, bool] = {}
        self._pollable = True
        self._soon: asyncio.Handle | None = None  # the next read of an fd without a reader
        self._reading = False  # our reader on stdin is registered
        self._paused = True  # the listener does not want data now
        self._held = bytearray()  # typed while paused (escape mode)
        self._eof = False
        self._closed = False
        self._flushed: asyncio.Future[None] | None = None
        self.modem = ModemLines.NONE
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def holds_back(self) -> bool:
        return True  # a person or a pipe waits; nothing is lost while the hub is away

    @property
    def eof(self) -> bool:
        return self._eof

    async def open(self, listener: PortListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        for fd in {self._in, self._out}:
            self._blocking[fd] = os.get_blocking(fd)
            os.set_blocking(fd, False)
        self._writer = FdWriter(self._loop, self._out, self._drained, self._write_failed)
        self._update_reader()

    # --- stdin ----------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        self._paused = True
        self._update_reader()

    def resume_reading(self) -> None:
        self._paused = False
        if self._held or self._eof:
            assert self._loop is not None
            self._loop.call_soon(self._release_held)  # not inside the bridge's own call
        self._update_reader()

    def _release_held(self) -> None:
        if self._paused or self._closed:
            return
        held, self._held = bytes(self._held), bytearray()
        if held:
            self._deliver(held)
        if self._eof and not self._held:
            self._on_eof()
        self._update_reader()

    def _wants_input(self) -> bool:
        if self._closed or self._eof:
            return False
        if not self._paused:
            return True
        return self._escape is not None and len(self._held) < HELD_LIMIT

    def _update_reader(self) -> None:
        assert self._loop is not None
        wanted = self._wants_input()
        if wanted == self._reading:
            return
        self._reading = wanted
        if not self._pollable:
            if wanted:
                self._read_soon()
            return
        if not wanted:
            self._loop.remove_reader(self._in)
            return
        try:
            self._loop.add_reader(self._in, self._on_readable)
        except PermissionError:  # a plain file or /dev/null: never blocks, read it from the loop
            self._pollable = False
            self._read_soon()

    def _read_soon(self) -> None:
        """One pending read at a time for an fd without a reader."""
        if self._soon is None and self._loop is not None:
            self._soon = self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        self._soon = None
        if not self._reading:
            return
        try:
            data = os.read(self._in, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # a terminal that hung up (EIO): the same as end of input
            data = b""
        if not data:
            self._reached_eof()
            return
        if self._escape is None:
            self._deliver(data)
        else:
            for item in self._escape.feed(data):
                if isinstance(item, Data):
                    self._deliver(item.data)
                else:
                    self._on_command(item)
            if self._escape.done:
                self._reached_eof(quiet=True)
                return
        self._update_reader()
        if self._reading and not self._pollable:
            self._read_soon()

    def _deliver(self, data: bytes) -> None:
        if self._read_only or self._closed:
            return
        if self._paused:
            self._held += data
            return
        self.bytes_read += len(data)
        if self._trace is not None:
            self._trace("out", data)
        assert self._listener is not None
        self._listener.port_data(data)

    def _reached_eof(self, *, quiet: bool = False) -> None:
        """End of input. ``quiet``: after quit, which the command itself reports."""
        self._eof = True
        self._update_reader()
        if not quiet and not self._held:
            self._on_eof()

    # --- stdout ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed or self._writer is None:
            raise PortGone("the console's output is closed")
        if self._trace is not None:
            self._trace("in", data)
        self.bytes_written += len(data)
        try:
            self._writer.write(data)
        except OSError as exc:
            raise PortGone(f"cannot write to the console's output: {exc.strerror}") from None

    @property
    def write_buffer_size(self) -> int:
        return self._writer.size if self._writer is not None else 0

    def _drained(self) -> None:
        self._wake_flush()
        if self._listener is not None:
            self._listener.port_drained()

    def _wake_flush(self) -> None:
        waiter, self._flushed = self._flushed, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _write_failed(self, exc: OSError) -> None:
        self._wake_flush()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.port_lost(PortGone(f"cannot write to the console's output: {exc.strerror}"))

    # --- line operations: a console has none of its own ----------------------------------------

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        return settings

    async def set_control(self, request: ControlRequest) -> ControlState:
        return request.apply_to(ControlState())

    async def purge(self, which: Purge) -> None:
        if which & Purge.TRANSMIT and self._writer is not None:
            self._writer.clear()

    def modem_lines(self) -> ModemLines:
        return self.modem

    def set_modem_lines(self, lines: ModemLines) -> None:
        """The hub's report of the device's modem lines (shown by the line-state command)."""
        self.modem = lines

    async def flush(self) -> None:
        """Wait until what was written has left for stdout (or stdout failed)."""
        if self._writer is None or not self._writer.size or self._closed:
            return
        assert self._loop is not None
        if self._flushed is None:
            self._flushed = self._loop.create_future()
        await asyncio.shield(self._flushed)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        if self._loop is not None:
            if self._reading and self._pollable:
                self._loop.remove_reader(self._in)
            if self._soon is not None:
                self._soon.cancel()
            self._reading = False
            if self._writer is not None:
                self._writer.clear()
        self._wake_flush()
        for fd, blocking in self._blocking.items():
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)
