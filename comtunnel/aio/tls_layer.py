"""TLS as a protocol layer over a plain TCP transport, using ssl.MemoryBIO.

Why not ``create_server(ssl=...)``: asyncio and uvloop report a failed server-side handshake only
in debug mode, and may drop the TLS alert on the floor when they close, so neither side could say
*why* a connection was refused. Here the handshake is ours: its failure is an exception we log
with the peer's address, and the alert OpenSSL produced is written out before the socket closes,
so the rejected peer learns the reason too ("unknown CA", "certificate required").

The layer presents the inner protocol (the tunnel) with a transport-like object: write, close,
abort, pause/resume_reading, get_extra_info('ssl_object' | 'peername' | 'socket'...).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, cast

READ_CHUNK = 256 * 1024


#: A transport's extra info under this name: the relay's certificate (DER) when the connection
#: runs through a relay, so the client can refuse a relay that answers as the hub itself.
RELAY_CERTIFICATE = "relay_certificate"


class TlsLayer(asyncio.Protocol):
    def __init__(
        self,
        context: ssl.SSLContext,
        inner: asyncio.Protocol,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float = 10.0,
        on_handshake_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.inner = inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side, server_hostname)
        self._timeout = handshake_timeout
        self._on_failed = on_handshake_failed
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handshaken = False
        self._error: BaseException | None = None
        self._closing = False
        self.peer_address = "?"

    # --- lower side: asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_address = f"{peer[0]}:{peer[1]}"
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._handshake_timed_out)
        self._advance_handshake()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self._handshaken:
            self._advance_handshake()
            if not self._handshaken:
                return
        self._read_records()

    def eof_received(self) -> bool | None:
        self._incoming.write_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        error = self._error or exc
        if not self._handshaken:
            self._fail_handshake(error or ConnectionResetError("connection closed during the TLS handshake"))
        self.inner.connection_lost(error if isinstance(error, Exception) else None)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # --- handshake ----------------------------------------------------------------------------

    def _advance_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()  # the alert telling the peer why
            self._fail_handshake(exc)
            self._close_transport()
            return
        self._flush()
        self._handshaken = True
        if self._timer is not None:
            self._timer.cancel()
        self.inner.connection_made(cast(asyncio.BaseTransport, self))

    def _handshake_timed_out(self) -> None:
        if not self._handshaken:
            self._fail_handshake(TimeoutError(f"no TLS handshake within {self._timeout:g} s"))
            if self._transport is not None:
                self._transport.abort()

    def _fail_handshake(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            if self._on_failed is not None:
                self._on_failed(exc)

    # --- records ------------------------------------------------------------------------------

    def _read_records(self) -> None:
        chunks = []
        eof = False
        try:
            while True:
                chunk = self._ssl.read(READ_CHUNK)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                if not self._incoming.pending and not self._ssl.pending():
                    break  # all consumed: skip the SSLWantReadError a further read would raise
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except ssl.SSLError as exc:  # e.g. TLS 1.3: the hub rejects our certificate after the handshake
            self._error = exc
            eof = True
        if self._outgoing.pending:  # session tickets, key updates: rarely anything
            self._flush()
        if chunks:
            self.inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof:
            self._close_transport()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # --- upper side: what the inner protocol sees as its transport -----------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not self._handshaken:
            return
        sent = self._ssl.write(data)  # all of it, unless a record limit splits it
        if sent < len(data):
            view = memoryview(data)[sent:]
            while view:
                view = view[self._ssl.write(view) :]
        self._flush()

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._closing or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._handshaken:
            with contextlib.suppress(ssl.SSLError):
                self._ssl.unwrap()  # close_notify
            self._flush()
        self._close_transport()

    def _close_transport(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._transport is not None:
            self._transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        return self._transport.get_extra_info(name, default) if self._transport is not None else default


async def peer_certificate(
    host: str, port: int, context: ssl.SSLContext, server_hostname: str | None, timeout: float
) -> bytes | None:
    """The certificate (DER) a TLS server presents once ``context`` verified it, or None if it could not.

    Only our side of the handshake is run: when it has verified the server's certificate, the
    connection is dropped with our last flight (certificate, Finished) unsent, so the server never
    sees a finished handshake. Used to name what a hub's certificate holds after a hostname
    mismatch, with :func:`comtunnel.tls.names_probe_context`.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    data = await reader.read(READ_CHUNK)
                    if not data:
                        return None
                    incoming.write(data)
    except (OSError, ssl.SSLError, ssl.CertificateError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.transport.abort()
    return tls.getpeercert(binary_form=True)
