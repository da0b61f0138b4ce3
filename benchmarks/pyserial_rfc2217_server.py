"""pyserial's RFC 2217 access server (serial.rfc2217.PortManager) on one port, one client at a time.

A peer for the RFC 2217 benchmark, written against PortManager's documented interface.
    python benchmarks/pyserial_rfc2217_server.py DEVICE TCPPORT
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

import serial
import serial.rfc2217


class _PtySerial(serial.Serial):
    """A PTY has no modem lines (ENOTTY); the real server would die on the first DTR/CTS access."""

    def _update_dtr_state(self) -> None:
        with contextlib.suppress(OSError):
            super()._update_dtr_state()

    def _update_rts_state(self) -> None:
        with contextlib.suppress(OSError):
            super()._update_rts_state()

    def _update_break_state(self) -> None:
        with contextlib.suppress(OSError):
            super()._update_break_state()

    @property
    def cts(self) -> bool:
        return False

    @property
    def dsr(self) -> bool:
        return False

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return False


class _Connection:
    """PortManager writes its telnet answers with connection.write()."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


def serve(device: str, port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            handle(conn, device)
        except OSError as exc:  # the client went away; wait for the next one
            print(f"connection ended: {exc}", file=sys.stderr, flush=True)
        finally:
            conn.close()


def handle(conn: socket.socket, device: str) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ser = _PtySerial(device, 115200, timeout=0.05)
    alive = True
    try:
        manager = serial.rfc2217.PortManager(ser, _Connection(conn))

        def device_to_net() -> None:
            try:
                while alive:
                    data = ser.read(max(1, ser.in_waiting))
                    if data:
                        conn.sendall(b"".join(manager.escape(data)))
            except OSError:
                pass

        thread = threading.Thread(target=device_to_net, daemon=True)
        thread.start()
        while True:
            data = conn.recv(65536)
            if not data:
                break
            ser.write(b"".join(manager.filter(data)))
    finally:
        alive = False
        ser.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
