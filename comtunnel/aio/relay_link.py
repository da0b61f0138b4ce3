"""Dialling a relay, from a hub or a client: the outer TLS to the relay, the rendezvous inside it,
and then the normal hub-client TLS session inside that (TLS in TLS), so the relay forwards only
ciphertext it holds no key for.

The stack on each end of a paired connection::

    TCP  ->  TlsLayer (to the relay)  ->  RendezvousLink  ->  TlsLayer (end to end)  ->  Tunnel

:class:`RendezvousLink` speaks :mod:`comtunnel.protocol.rendezvous` until PAIRED and then is only
a transport for the inner layer, which never knows a relay is there. Redialling stays where it
is: the client's own loop (its sessions resume through each new pairing), and
:class:`HubRelay` for the hub's control connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from comtunnel.aio.tasks import Tasks
from comtunnel.aio.tls_layer import RELAY_CERTIFICATE, TlsLayer
from comtunnel.aio.tunnel import tune_socket
from comtunnel.errors import CertificateError, PeerError
from comtunnel.policy.backoff import Backoff
from comtunnel.protocol import rendezvous as rv
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.tls import client_relay_context, describe_tls_error

if TYPE_CHECKING:
    from comtunnel.aio.hub.server import Hub

log = logging.getLogger(__name__)

#: The TCP connect, the TLS handshake with the relay and the rendezvous, together.
RELAY_TIMEOUT = 10.0
#: The hub's control connection: a PING this often, dead after DEAD_AFTER without a word.
PING_INTERVAL = 10.0
DEAD_AFTER = 30.0

#: How the client's and the hub's connections are made: given the inner protocol, connect it.
Dialer = Callable[[asyncio.Protocol], Awaitable[None]]


class RendezvousLink(asyncio.Protocol):
    """Between the TLS to the relay and the inner protocol: ``first`` goes out, then messages come
    in until PAIRED; from then on it only passes bytes and calls through."""

    def __init__(
        self,
        role: rv.Role,
        first: rv.Message,
        inner: asyncio.Protocol | None,
        where: str,
        on_message: Callable[[rv.Message], None] | None = None,
    ) -> None:
        self.rendezvous = rv.Rendezvous(role, relay=False)
        self.first = first
        self.inner = inner
        self.where = where
        self.on_message = on_message
        loop = asyncio.get_running_loop()
        self.paired: asyncio.Future[None] = loop.create_future()  # or the reason it never will be
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.heard = loop.time()

    # --- from the TLS layer below --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.rendezvous.send(self.first))

    def data_received(self, data: bytes) -> None:
        if self.rendezvous.phase is rv.Phase.PAIRED:
            assert self.inner is not None
            self.inner.data_received(data)
            return
        self.heard = asyncio.get_running_loop().time()
        try:
            messages = self.rendezvous.receive_data(data)
        except RemoteProtocolError as exc:
            self._fail(PeerError(f"{self.where} broke the rendezvous protocol: {exc}"))
            return
        for message in messages:
            match message:
                case rv.Paired():
                    self._pair()
                case rv.Error(code, text):
                    self._fail(_relay_error(self.where, code, text))
                case _ if self.on_message is not None:
                    self.on_message(message)

    def _pair(self) -> None:
        if self.inner is None:
            return
        self.paired.set_result(None)
        self.inner.connection_made(cast(asyncio.BaseTransport, self))
        rest = self.rendezvous.passthrough()
        if rest:
            self.inner.data_received(rest)

    def _fail(self, exc: BaseException) -> None:
        if not self.paired.done():
            self.paired.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.paired.done() and self.inner is not None and not self.paired.exception():
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.paired.done():
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                reason = describe_tls_error(exc, "relay")
                self.paired.set_exception(CertificateError(f"TLS with the {self.where} failed: {reason}"))
            else:
                self.paired.set_exception(exc or ConnectionResetError(f"the {self.where} closed the connection"))
        elif self.inner is not None and self.paired.exception() is None:
            self.inner.connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(exc)

    def pause_writing(self) -> None:
        if self.inner is not None and self.rendezvous.phase is rv.Phase.PAIRED:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None and self.rendezvous.phase is rv.Phase.PAIRED:
            self.inner.resume_writing()

    # --- what the inner protocol sees as its transport -----------------------------------------------

    def send(self, message: rv.Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.rendezvous.send(message))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        if name == RELAY_CERTIFICATE:
            outer = self.transport.get_extra_info("ssl_object")
            return outer.getpeercert(binary_form=True) if outer is not None else default
        return self.transport.get_extra_info(name, default)


class RelayRefused(PeerError):
    """The relay's ERROR: why it would not pair (or keep) this connection."""

    def __init__(self, message: str, code: rv.Code | int) -> None:
        super().__init__(message)
        self.code = code


def _relay_error(where: str, code: rv.Code | int, text: str) -> RelayRefused:
    return RelayRefused(f"{where}: {text}", code)


class _Preamble(asyncio.Protocol):
    """Says which role we dial as, in plaintext, then hands the TCP connection to the TLS layer."""

    def __init__(self, layer: TlsLayer, role: rv.Role) -> None:
        self.layer = layer
        self.role = role

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tune_socket(transport)
        cast(asyncio.Transport, transport).write(rv.preamble(self.role))
        transport.set_protocol(self.layer)
        self.layer.connection_made(transport)


async def dial_relay(
    host: str, port: int, context: ssl.SSLContext, link: RendezvousLink, *, server_side: bool
) -> TlsLayer:
    """Connect ``link`` to the relay inside TLS: a client is the TLS client (it checks the relay's
    certificate for ``host``), a hub the TLS server (the relay reads its names from hub.crt)."""
    outer = TlsLayer(
        context,
        link,
        server_side=server_side,
        server_hostname=None if server_side else host,
        handshake_timeout=RELAY_TIMEOUT,
    )
    role = rv.Role.HUB if server_side else rv.Role.CLIENT
    await asyncio.get_running_loop().create_connection(lambda: _Preamble(outer, role), host, port)
    return outer


def client_dialer(host: str, port: int, context: ssl.SSLContext, hub_name: str) -> Dialer:
    """The client's connection to hub ``hub_name`` through the relay at host:port. The client's
    context serves both TLS sessions: it verifies the relay by ``host``, the hub by its name."""
    where = f"relay {host}:{port}"

    async def connect(inner: asyncio.Protocol) -> None:
        link = RendezvousLink(rv.Role.CLIENT, rv.Request(hub_name), inner, where)
        outer: TlsLayer | None = None
        try:
            async with asyncio.timeout(RELAY_TIMEOUT):
                outer = await dial_relay(host, port, context, link, server_side=False)
                await link.paired
        except BaseException:
            if outer is not None:
                outer.abort()
            raise

    return connect


def relay_dialer(host: str, port: int, certs: Path, name: str, hub_name: str, relay_ca: Path | None) -> Dialer:
    """:func:`client_dialer` for a client's own files: NAME's certificate, and the relay verified
    against ``relay_ca`` or ca.crt (:func:`comtunnel.tls.client_relay_context`)."""
    return client_dialer(host, port, client_relay_context(certs, name, relay_ca), hub_name)


class HubRelay:
    """A hub's registration at a relay: one control connection, redialled with backoff while the
    hub runs; each OFFER on it becomes a data connection carrying one client's session."""

    def __init__(self, hub: Hub, host: str, port: int, context: ssl.SSLContext) -> None:
        self.hub = hub
        self.host, self.port = host, port
        self.where = f"relay {host}:{port}"
        self.context = context
        self.registered = asyncio.Event()
        self._replaced = False  # another hub with our certificate took the registration over
        self._attaching = Tasks("hub relay attachments")

    async def run(self) -> None:
        backoff = Backoff()
        try:
            while True:
                if await self._control_connection() and not self._replaced:
                    backoff.reset()
                delay = backoff.next_delay()
                log.info("dialling the %s again in %.1f s", self.where, delay)
                await asyncio.sleep(delay)
        finally:
            await self._attaching.close()

    async def _control_connection(self) -> bool:
        """One control connection, until it ends; True if the relay registered us."""
        registered: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()

        def on_message(message: rv.Message) -> None:
            match message:
                case rv.Registered(names) if not registered.done():
                    registered.set_result(names)
                case rv.Offer(token):
                    self._attaching.spawn(self._attach(token))

        link = RendezvousLink(rv.Role.HUB, rv.Register(), None, self.where, on_message)
        outer: TlsLayer | None = None
        try:
            async with asyncio.timeout(RELAY_TIMEOUT):
                outer = await dial_relay(self.host, self.port, self.context, link, server_side=True)
                waiter = asyncio.ensure_future(asyncio.shield(registered))
                either: set[asyncio.Future[Any]] = {waiter, link.paired}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if link.paired.done():
                    waiter.cancel()
                    link.paired.result()  # the relay's ERROR, or the connection's end
                    raise ConnectionResetError(f"the {self.where} closed the connection")
                names = await waiter
        except (OSError, TimeoutError, PeerError, CertificateError) as exc:
            if outer is not None:
                outer.abort()
            message = str(exc) if isinstance(exc, PeerError | CertificateError) else describe_tls_error(exc, "relay")
            log.warning("cannot register at the %s: %s", self.where, message)
            return False
        log.info("registered at the %s as %s", self.where, ", ".join(names))
        self.registered.set()
        try:
            await self._keep_alive(link)
        finally:
            self.registered.clear()
            outer.abort()
        return True

    async def _keep_alive(self, link: RendezvousLink) -> None:
        loop = asyncio.get_running_loop()
        while not link.closed.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), PING_INTERVAL)
            if link.closed.done():
                break
            if loop.time() - link.heard > DEAD_AFTER:
                log.warning("the %s has been silent for %g s: dialling it again", self.where, DEAD_AFTER)
                return
            link.send(rv.Ping())
        error = link.paired.exception() if link.paired.done() else None
        self._replaced = isinstance(error, RelayRefused) and error.code == rv.Code.REPLACED
        if self._replaced:
            log.warning(
                "another hub with this certificate registered at the %s and took over; if that was not us "
                "reconnecting, two hubs share hub.crt, and they will keep replacing each other",
                self.where,
            )
        elif error is not None:
            log.warning("%s", error)
        else:
            log.warning("lost the connection to the %s", self.where)

    async def _attach(self, token: bytes) -> None:
        """A client waits: dial in with its token and serve it a normal session."""
        session, layer = self.hub.outgoing_session()
        link = RendezvousLink(rv.Role.HUB, rv.Attach(token), layer, self.where)
        outer: TlsLayer | None = None
        try:
            async with asyncio.timeout(RELAY_TIMEOUT):
                outer = await dial_relay(self.host, self.port, self.context, link, server_side=True)
                await link.paired
        except (OSError, TimeoutError, PeerError, CertificateError) as exc:
            self.hub.live.discard(session)
            if outer is not None:
                outer.abort()
            log.warning("cannot take a client's connection at the %s: %s", self.where, exc)
            return
        except asyncio.CancelledError:
            if outer is not None:
                outer.abort()
            raise
        await session.tunnel.closed
