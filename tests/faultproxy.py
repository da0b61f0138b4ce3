"""A TCP proxy on 127.0.0.1 that tests (and the soak benchmark) can cut, stall and refuse on command.

It runs its own selector loop in a thread, so synchronous test code drives it directly:

* ``cut()``: every current connection is reset both ways (SO_LINGER 0, so RST, not FIN), as when
  a NAT entry expires or a route changes; new connections are still accepted.
* ``stall()`` / ``resume()``: current connections stop moving bytes and are not read any more,
  without FIN or RST, as on a dead Wi-Fi path; the kernel buffers fill, nobody is told.
* ``refuse(True)``: new connections are reset at once, as when the far host is down.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType

CHUNK = 256 * 1024


class _Link:
    __slots__ = ("down", "stalled", "up")

    def __init__(self, down: socket.socket, up: socket.socket) -> None:
        self.down = down  # the side that connected to us
        self.up = up  # our connection to the target
        self.stalled = False


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._links: list[_Link] = []
        self._pending: list[tuple[str, object]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._refusing = False
        self._stalling = False
        self._stop = False
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()

    # --- commands (any thread) ----------------------------------------------------------------

    def cut(self) -> None:
        self._command("cut")

    def stall(self) -> None:
        self._command("stall")

    def resume(self) -> None:
        self._command("resume")

    def refuse(self, on: bool = True) -> None:
        self._command("refuse", on)

    def close(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        for link in self._links:
            self._reset(link)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _command(self, what: str, arg: object = None) -> None:
        done = threading.Event()
        with self._lock:
            self._pending.append((what, (arg, done)))
        self._wake_w.send(b"x")
        done.wait(5)

    # --- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(0.5):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                    self._run_commands()
                else:
                    link, sock = key.data
                    self._forward(link, sock)

    def _run_commands(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for what, (arg, done) in pending:  # type: ignore[misc]
            if what == "cut":
                for link in list(self._links):
                    self._reset(link)
                self._stalling = False
            elif what == "stall":
                self._stalling = True
                for link in self._links:
                    link.stalled = True
                    for sock in (link.down, link.up):
                        self._selector.unregister(sock)
            elif what == "resume":
                self._stalling = False
                for link in self._links:
                    if link.stalled:
                        link.stalled = False
                        self._watch(link)
            elif what == "refuse":
                self._refusing = bool(arg)
            done.set()

    def _accept(self) -> None:
        try:
            down, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._refusing:
            _rst(down)
            return
        try:
            up = socket.create_connection(self.target, timeout=5)
        except OSError:
            _rst(down)
            return
        for sock in (down, up):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(down, up)
        self._links.append(link)
        self.connections += 1
        self._watch(link)

    def _watch(self, link: _Link) -> None:
        self._selector.register(link.down, selectors.EVENT_READ, (link, link.down))
        self._selector.register(link.up, selectors.EVENT_READ, (link, link.up))

    def _forward(self, link: _Link, sock: socket.socket) -> None:
        other = link.up if sock is link.down else link.down
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._reset(link)
            return
        try:
            other.setblocking(True)  # simple and bounded: the peer is local and reading
            other.settimeout(10)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._reset(link)
            return
        if sock is link.down:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)

    def _reset(self, link: _Link) -> None:
        if link in self._links:
            self._links.remove(link)
        for sock in (link.down, link.up):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            _rst(sock)


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
