"""The relay: hubs and clients behind NAT both dial it; it pairs them and forwards ciphertext.

Each connection is read for its preamble (which TLS role we take), then wrapped in TLS with our
certificate; an :class:`_End` speaks the rendezvous (:mod:`comtunnel.protocol.rendezvous`) and
asks :class:`~comtunnel.policy.relay.RelayPolicy` what to do. Once paired, two ends only pass
bytes: the hub-client TLS session inside is end to end, so nothing here can read or alter the
serial data, and nothing here logs bytes, only names, addresses and counts.

Back-pressure: each TLS layer's transport has the policy's write-buffer limits; when one side's
buffer passes the high mark asyncio calls ``pause_writing``, and we stop reading the other side.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import ssl
import time
from typing import Any, cast

from comtunnel import lograte
from comtunnel.aio.refuse import Refusals
from comtunnel.aio.tls_layer import TlsLayer
from comtunnel.aio.tunnel import tune_socket
from comtunnel.certinfo import certificate_name, subject_alt_names
from comtunnel.errors import CertificateError
from comtunnel.policy.relay import Pairing, Refusal, RelayLimits, RelayPolicy
from comtunnel.ports.network import cannot_listen, shown_listen_address
from comtunnel.protocol import rendezvous as rv
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.tls import describe_tls_error

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self, for_clients: ssl.SSLContext, for_hubs: ssl.SSLContext, limits: RelayLimits | None = None
    ) -> None:
        """``for_clients``: a server context (relay.crt, client certificates required);
        ``for_hubs``: a client context that verifies a hub's certificate chain, not its name."""
        self.contexts = {rv.Role.CLIENT: for_clients, rv.Role.HUB: for_hubs}
        self.policy = RelayPolicy(limits, token_source=lambda: secrets.token_bytes(rv.TOKEN_SIZE))
        self.ends: dict[int, _End] = {}
        self.started = time.time()
        self.server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._refusals = Refusals("a relay connection")

    @property
    def limits(self) -> RelayLimits:
        return self.policy.limits

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(lambda: _Door(self), host, port)
        except OSError as exc:
            raise cannot_listen(host, port, "hubs and clients (--listen)", exc) from None
        addresses = [s.getsockname()[:2] for s in self.server.sockets]
        for host_, port_ in addresses:
            log.info("relay listening on %s", shown_listen_address(host_, port_))
        return addresses

    def new_end(self, role: rv.Role, source: str, address: str) -> _End:
        end = _End(self, next(self._ids), role, source, address)
        self.ends[end.id] = end
        return end

    # --- the policy's one timer ---------------------------------------------------------------------

    def arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.policy.next_deadline()
        if at is not None:
            self._timer = asyncio.get_running_loop().call_at(at, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timer = None
        expired = self.policy.expire(asyncio.get_running_loop().time())
        for pending in expired.waits:
            if (end := self.ends.get(pending.client)) is not None:
                end.refuse(Refusal(rv.Code.TIMEOUT, f"hub {pending.hub_name!r} did not take the connection in time"))
        for pairing in expired.idle:
            log.info(
                "client %s and hub %s: nothing sent for %g s; closing",
                pairing.client_name,
                pairing.hub_name,
                self.limits.idle_timeout,
            )
            for conn in (pairing.client, pairing.hub):
                if (end := self.ends.get(conn)) is not None:
                    end.close()
        self.arm()

    # --- status ------------------------------------------------------------------------------------

    def status_snapshot(self) -> dict[str, Any]:
        """What `comtunnel status` shows: names, addresses, counts; never a byte of what passes."""
        now = asyncio.get_running_loop().time()
        return {"relay": True, "started": self.started, "now": time.time()} | self.policy.snapshot(now)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.server is not None:
            self.server.close()
        for end in list(self.ends.values()):
            if end.paired is None:
                end.refuse(Refusal(rv.Code.SHUTTING_DOWN, "the relay is shutting down"))
            else:
                end.close()
        if self.server is not None:
            await self.server.wait_closed()


class _Door(asyncio.Protocol):
    """A new TCP connection until its preamble says which TLS role we take."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.source = self.address = "?"
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.handed_over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else "?"
        self.address = f"{peer[0]}:{peer[1]}" if peer else "?"
        reason = self.relay.policy.admission.arrive(self.source)
        if reason is not None:
            self.relay._refusals.refused(transport, reason)
            self.handed_over = True  # nothing was counted
            return
        self.transport = cast(asyncio.Transport, transport)
        tune_socket(transport)
        timeout = self.relay.limits.admission.handshake_timeout
        self.timer = asyncio.get_running_loop().call_later(timeout, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        try:
            role = rv.classify(self.buffer)
        except RemoteProtocolError as exc:
            lograte.warn(log, "bad relay preambles", self.source, "connection from %s: %s", self.source, exc)
            self.transport.abort()
            return
        if role is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.handed_over = True
        end = self.relay.new_end(role, self.source, self.address)
        layer = TlsLayer(
            self.relay.contexts[role],
            end,
            server_side=role is rv.Role.CLIENT,
            handshake_timeout=self.relay.limits.admission.handshake_timeout,
            on_handshake_failed=end.handshake_failed,
        )
        self.transport.set_protocol(layer)
        layer.connection_made(self.transport)
        rest = self.buffer[rv.PREAMBLE_SIZE :]
        if rest:
            layer.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.handed_over:
            self.relay.policy.admission.left(self.source, authenticated=False)


class _End(asyncio.Protocol):
    """One authenticated connection on the relay, inside its TLS: a hub's control or data
    connection, or a client's."""

    def __init__(self, relay: Relay, conn: int, role: rv.Role, source: str, address: str) -> None:
        self.relay = relay
        self.id = conn
        self.role = role
        self.source = source
        self.rendezvous = rv.Rendezvous(role, relay=True)
        self.tls: TlsLayer | None = None
        self.names: tuple[str, ...] = ()
        self.address = address
        self.paired: _End | None = None
        self.counted = False  # holds one of the admission's session slots
        self.startup = True  # still counted as a handshake

    @property
    def who(self) -> str:
        kind = "hub" if self.role is rv.Role.HUB else "client"
        return f"{kind} {self.names[0] if self.names else '?'} ({self.address})"

    def handshake_failed(self, exc: BaseException) -> None:
        peer = "hub" if self.role is rv.Role.HUB else "client"
        reason = describe_tls_error(exc, peer)
        lograte.warn(log, "failed TLS handshakes", self.source, "TLS with %s failed: %s", self.address, reason)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tls = cast(TlsLayer, transport)
        self.address = self.tls.peer_address
        self.names = self._certificate_names()
        admission = self.relay.policy.admission
        self.startup = False
        refused = admission.authenticated(self.source)
        if refused is not None:
            lograte.warn(log, "refused relay connections", "", "refused %s: %s", self.who, refused)
            self.tls.close()
            return
        self.counted = True
        limits = self.relay.limits
        self.tls.set_write_buffer_limits(limits.write_high, limits.write_low)

    def _certificate_names(self) -> tuple[str, ...]:
        """A hub's: every name its certificate holds (common name first, then the SANs); a client's:
        its common name. Read from the verified certificate, never from what the peer says."""
        assert self.tls is not None
        ssl_object = self.tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return ()
        try:
            names = [certificate_name(der)]
            if self.role is rv.Role.HUB:
                names += subject_alt_names(der)
        except CertificateError:
            return ()
        return tuple(dict.fromkeys(names))

    def data_received(self, data: bytes) -> None:
        if self.paired is not None:
            self._forward(data)
            return
        try:
            messages = self.rendezvous.receive_data(data)
        except RemoteProtocolError as exc:
            code = exc.reason if isinstance(exc, rv.RendezvousError) else rv.Code.PROTOCOL_ERROR
            log.warning("%s broke the rendezvous protocol: %s", self.who, exc)
            self.refuse(Refusal(code, str(exc)[: rv.MAX_ERROR_MESSAGE]))
            return
        for message in messages:
            self._handle(message)

    def _handle(self, message: rv.Message) -> None:
        policy, now = self.relay.policy, asyncio.get_running_loop().time()
        match message:
            case rv.Register():
                for old in policy.register(self.id, self.names, self.address, now):
                    if (end := self.relay.ends.get(old)) is not None:
                        log.info("%s replaces its registration from %s", self.who, end.address)
                        end.refuse(Refusal(rv.Code.REPLACED, "a newer connection of this hub registered"))
                self.send(rv.Registered(self.names))
                log.info("%s registered", self.who)
            case rv.Ping():
                self.send(rv.Pong())
            case rv.Request(hub):
                client = self.names[0] if self.names else "?"
                answer = policy.request(self.id, client, hub, now)
                if isinstance(answer, Refusal):
                    log.info("%s asked for hub %r: %s", self.who, hub, answer.message)
                    self.refuse(answer)
                    return
                self.relay.ends[policy.control_for(answer)].send(rv.Offer(answer.token))
                self.relay.arm()
            case rv.Attach(token):
                pairing = policy.attach(self.id, token, self.names, now)
                if isinstance(pairing, Refusal):
                    log.info("%s attached: %s", self.who, pairing.message)
                    self.refuse(pairing)
                    return
                self._pair(pairing)

    def _pair(self, pairing: Pairing) -> None:
        client = self.relay.ends[pairing.client]
        client.paired, self.paired = self, client
        log.info("client %s (%s) paired with hub %s", pairing.client_name, client.address, pairing.hub_name)
        for end in (client, self):
            end.send(rv.Paired())
        for end in (client, self):
            rest = end.rendezvous.passthrough()
            if rest:
                end._forward(rest)
        self.relay.arm()

    def _forward(self, data: bytes) -> None:
        partner = self.paired
        if partner is None or partner.tls is None:
            return
        partner.tls.write(data)
        self.relay.policy.forwarded(self.id, len(data), asyncio.get_running_loop().time())

    def send(self, message: rv.Message) -> None:
        if self.tls is not None and not self.tls.is_closing():
            self.tls.write(self.rendezvous.send(message))

    def refuse(self, refusal: Refusal) -> None:
        """Say why (ERROR) and close, before pairing."""
        if self.rendezvous.phase not in (rv.Phase.PAIRED, rv.Phase.CLOSED):
            self.send(rv.Error(refusal.code, refusal.message))
        self.close()

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.ends.pop(self.id, None)
        admission = self.relay.policy.admission
        if self.counted or self.startup:
            admission.left(self.source, authenticated=self.counted)
            self.counted = self.startup = False
        partner = self.relay.policy.left(self.id)
        if partner is not None and (end := self.relay.ends.get(partner)) is not None:
            log.info("%s left; closing its partner %s", self.who, end.who)
            end.close()
        elif self.role is rv.Role.HUB and self.rendezvous.phase is rv.Phase.CONTROL:
            log.info("%s unregistered", self.who)

    def pause_writing(self) -> None:
        if self.paired is not None and self.paired.tls is not None:
            self.paired.tls.pause_reading()

    def resume_writing(self) -> None:
        if self.paired is not None and self.paired.tls is not None:
            self.paired.tls.resume_reading()
