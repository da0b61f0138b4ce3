"""The fault proxy itself: it forwards intact, and its faults look like the real ones to a peer."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from faultproxy import FaultProxy


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = False

    def serve() -> None:
        while not stop:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop = True
        server.close()


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    got = bytearray()
    sender = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    sender.start()
    while len(got) < len(data):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    sender.join(10)
    return bytes(got)


def test_forwards_4_mib_intact() -> None:
    data = os.urandom(4 << 20)
    with echo_server() as port, FaultProxy("127.0.0.1", port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        assert roundtrip(sock, data) == data
        sock.close()
        deadline = time.monotonic() + 5  # the proxy counts after its send returns: the echo may be faster
        while proxy.bytes_down < len(data) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.bytes_up == len(data) and proxy.bytes_down == len(data)


def test_cut_resets_and_new_connections_still_work() -> None:
    with echo_server() as port, FaultProxy("127.0.0.1", port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(sock, b"x") == b"x"
        proxy.cut()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.sendall(b"y")
            assert sock.recv(10) == b""  # RST, or at least EOF: raise if it was an orderly EOF
            raise ConnectionResetError
        sock.close()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(again, b"z") == b"z"
        again.close()
        assert proxy.connections == 2


def test_stall_is_silent_and_resume_continues_intact() -> None:
    with echo_server() as port, FaultProxy("127.0.0.1", port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.stall()
        sock.sendall(b"held")
        sock.settimeout(1.5)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(10)  # neither data nor EOF while stalled
        assert time.monotonic() - start >= 1.4
        proxy.resume()
        sock.settimeout(5)
        assert sock.recv(10) == b"held"
        sock.close()


def test_refuse_resets_new_connections() -> None:
    with echo_server() as port, FaultProxy("127.0.0.1", port) as proxy:
        proxy.refuse(True)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):  # at connect, or at the first use
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.settimeout(5)
                sock.sendall(b"x")
                if sock.recv(1) == b"":
                    raise ConnectionResetError
        proxy.refuse(False)
        ok = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(ok, b"fine") == b"fine"
        ok.close()
