"""One channel's ordered stream onto a port: writes and line operations, in the order they came.

Why this exists: writes are synchronous (into the port's buffer) while line operations (settings,
DTR/RTS/BREAK, purge) are blocking calls that hop through a worker thread or wait for an RFC 2217
acknowledgement. Run side by side, a purge sent before data ran after it and discarded the device's
reply, and a baud change applied after the bytes it should have preceded. The Linux tty layer is
the model for what each operation means here:

* A write goes straight to the port when nothing is queued, so bulk data costs a direct write;
  otherwise it waits behind what is queued, and consecutive queued writes leave as one.
* An operation runs alone, and nothing behind it moves until it is done. A line change
  (``drain=True``: settings, DTR/RTS/BREAK) first waits until the port's write buffer is empty,
  and the port's own call then waits for the device to send it (``tcsetattr(TCSADRAIN)``).
  A purge does not wait: PURGE TX discards exactly the output queued before it, PURGE RX the
  input that came before it.
* ``written(n)`` says that n bytes reached the port; the bridge returns credit from there on, so
  the peer's window bounds what waits here.
* While ``held`` (the device is gone) nothing moves. :meth:`close` empties the queue and waits for
  a running operation: none is cancelled while its thread is inside ``tcsetattr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from comtunnel.errors import PortError
from comtunnel.ports.base import SerialPort

log = logging.getLogger(__name__)

#: How long close() waits for an operation already running (an RFC 2217 server that never answers...).
CLOSE_WAIT = 5.0
#: A line change stops waiting for earlier output that has not moved for this long.
STALL_LIMIT = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    run: Callable[[], Awaitable[None]]
    drain: bool  # wait for earlier output to leave first (a line change), or not (a purge)
    what: str = ""


class PortQueue:
    def __init__(self, port: SerialPort, written: Callable[[int], None], failed: Callable[[PortError], None]) -> None:
        self.port = port
        self._written = written
        self._failed = failed
        self._items: deque[bytes | Operation] = deque()
        self.queued_bytes = 0
        self._running: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self.held = False
        self.closed = False

    @property
    def idle(self) -> bool:
        """Nothing queued or running: a write would go straight to the port."""
        return not self._items and self._running is None and not self.held

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self._items and self._running is None and not self.held:  # idle, inlined: the hot path
            self._to_port(data)
        else:
            self._items.append(data)
            self.queued_bytes += len(data)

    def submit(self, operation: Operation) -> None:
        if self.closed:
            return
        self._items.append(operation)
        self._pump()

    def port_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    def hold(self) -> None:
        """Stop moving (the device is gone); what is queued stays, in order."""
        self.held = True
        self.port_drained()  # an operation waiting for output to drain re-queues itself

    def release(self, port: SerialPort | None = None) -> None:
        """Move again, on ``port`` if the device was reopened."""
        if port is not None:
            self.port = port
        self.held = False
        self._pump()

    async def close(self) -> None:
        self.closed = True
        self._items.clear()
        self.queued_bytes = 0
        self.port_drained()
        running = self._running
        if running is not None:
            try:
                await asyncio.wait_for(asyncio.shield(running), CLOSE_WAIT)
            except TimeoutError:
                log.warning(
                    "%s: an operation did not finish within %g s; closing anyway", self.port.description, CLOSE_WAIT
                )

    # --- internals -------------------------------------------------------------------------------

    def _to_port(self, data: bytes) -> bool:
        try:
            self.port.write(data)
        except PortError as exc:
            self._failed(exc)
            return False
        self._written(len(data))
        return True

    def _pump(self) -> None:
        items = self._items
        while items and self._running is None and not self.held and not self.closed:
            head = items[0]
            if isinstance(head, Operation):
                items.popleft()
                self._running = asyncio.get_running_loop().create_task(self._run(head))
                return
            parts: list[bytes] = []
            while items and not isinstance(items[0], Operation):
                parts.append(items.popleft())  # type: ignore[arg-type]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self.queued_bytes -= len(data)
            if not self._to_port(data):
                return

    async def _run(self, operation: Operation) -> None:
        try:
            if operation.drain:
                await self._output_drained()
            if self.held and not self.closed:  # the device went while we waited: run it on the new one
                self._items.appendleft(operation)
            elif not self.closed:
                await operation.run()
        except Exception:  # a bug in an operation must not stall the channel for good
            log.exception("%s: %s failed", self.port.description, operation.what or "an operation")
        finally:
            self._running = None
            if not self.closed:
                self._pump()

    async def _output_drained(self) -> None:
        """Wait for the port's write buffer to empty; give up after STALL_LIMIT without progress (a line
        stopped by XOFF or CTS: the change may be what restarts it, as turning IXON off does)."""
        if self._drained is None:
            self._drained = asyncio.Event()
        left, since = self.port.write_buffer_size, time.monotonic()
        while left and not self.closed and not self.held:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):  # a port that never says 'drained' is re-checked
                await asyncio.wait_for(self._drained.wait(), 0.25)
            now, size = time.monotonic(), self.port.write_buffer_size
            if size < left:
                left, since = size, now
            elif size and now - since >= STALL_LIMIT:
                log.warning(
                    "%s: %d bytes of output have not moved for %g s (flow control?): not waiting for them",
                    self.port.description,
                    size,
                    STALL_LIMIT,
                )
                return
            left = size
