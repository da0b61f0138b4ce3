"""Buffered non-blocking writes to a file descriptor, the way an asyncio transport does them.

Bytes go straight to the fd while it takes them; the rest waits in one bytearray behind
``add_writer`` and goes out in large writes. ``on_drained`` fires when a non-empty buffer
empties: that is when the bridge returns credit to the tunnel.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


class FdWriter:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        on_drained: Callable[[], None],
        on_error: Callable[[OSError], None],
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._on_drained = on_drained
        self._on_error = on_error
        self._buffer = bytearray()

    @property
    def size(self) -> int:
        return len(self._buffer)

    def write(self, data: bytes) -> None:
        """Raises OSError (other than EAGAIN) for the caller to name."""
        if self._buffer:
            self._buffer += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._buffer += memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._flush)

    def _flush(self) -> None:
        try:
            while self._buffer:
                sent = os.write(self._fd, self._buffer)
                del self._buffer[:sent]
        except BlockingIOError:
            return
        except OSError as exc:
            self.clear()
            self._on_error(exc)
            return
        self._loop.remove_writer(self._fd)
        self._on_drained()

    def clear(self) -> bool:
        """Drop what waits; True if there was something (the caller owes its consumer a 'drained')."""
        had = bool(self._buffer)
        self._buffer.clear()
        self._loop.remove_writer(self._fd)
        return had
