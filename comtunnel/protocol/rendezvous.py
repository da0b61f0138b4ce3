"""The relay's rendezvous: how a hub and a client, both behind NAT, meet at a relay that forwards
their end-to-end TLS session and so sees only ciphertext.

Theory of operation (docs/wire-format.md, "Relay rendezvous", has the bytes):

* Every connection to the relay opens with an 8-byte plaintext preamble, ``CTRELAY`` and a role
  byte: ``C`` for a client, ``H`` for a hub. It tells the relay which TLS role to take before any
  TLS byte is read: towards a client the relay is the TLS server (the client verifies the relay's
  certificate by name, the relay the client's); towards a hub it is the TLS client, because a hub
  certificate is a server certificate (the relay verifies it and reads the hub's names from it).
* Inside that TLS, messages: a 4-byte big-endian length, then a msgpack array ``[type, ...]``,
  like the tunnel's frames, decoded as strictly (wrong shape, trailing bytes: RemoteProtocolError).
* A hub keeps one *control* connection: ``REGISTER`` -> ``REGISTERED(names)``, then the relay
  sends ``OFFER(token)`` whenever a client asks for it; ``PING``/``PONG`` keep NATs open.
* A client sends ``REQUEST(hub name)``. The hub answers an offer by dialling a *data* connection
  that says ``ATTACH(token)``. The relay sends ``PAIRED`` on both, and from then on each carries
  only the hub-client TLS session, byte for byte: :meth:`Rendezvous.receive_data` stops at
  ``PAIRED`` and hands over what follows it (:meth:`Rendezvous.passthrough`).
* ``ERROR(code, message)`` from the relay ends any connection before it is paired.

:class:`Rendezvous` is one end of one connection, as a table of (side, phase, message) ->
phase; anything else raises :class:`LocalProtocolError` (we misused it) or
:class:`RemoteProtocolError` (the peer did).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
PREAMBLE = b"CTRELAY"
PREAMBLE_SIZE = len(PREAMBLE) + 1
#: Largest message body: the biggest is REGISTERED with MAX_NAMES names of MAX_NAME characters.
MAX_MESSAGE = 16 * 1024
MAX_NAME = 253  # a DNS name
MAX_NAMES = 32
MAX_ERROR_MESSAGE = 512
TOKEN_SIZE = 16

_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size


class Role(enum.Enum):
    """Who dialled the relay: said by the preamble's last byte."""

    CLIENT = b"C"
    HUB = b"H"


class Code(enum.IntEnum):
    """Why the relay ended a connection before pairing it (ERROR's code)."""

    PROTOCOL_ERROR = 1
    VERSION_MISMATCH = 2
    NO_SUCH_HUB = 3
    HUB_BUSY = 4  # too many clients already waiting for this hub
    RELAY_BUSY = 5  # the relay is at its pairing limit
    BAD_TOKEN = 6  # ATTACH with a token nobody waits for (expired, or offered to another hub)
    TIMEOUT = 7  # the hub did not attach in time
    REPLACED = 8  # a newer registration of the same hub took over
    SHUTTING_DOWN = 9

    @classmethod
    def coerce(cls, value: int) -> Code | int:
        try:
            return cls(value)
        except ValueError:
            return value


class MessageType(enum.IntEnum):
    REGISTER = 1
    REGISTERED = 2
    REQUEST = 3
    OFFER = 4
    ATTACH = 5
    PAIRED = 6
    ERROR = 7
    PING = 8
    PONG = 9


@dataclasses.dataclass(frozen=True, slots=True)
class Register:
    """hub -> relay, first on a control connection. No name: the relay takes the names from the
    hub's verified certificate, never from what it says."""

    version: int = VERSION
    TYPE = MessageType.REGISTER


@dataclasses.dataclass(frozen=True, slots=True)
class Registered:
    """relay -> hub: the names clients can now ask for."""

    names: tuple[str, ...]
    TYPE = MessageType.REGISTERED


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """client -> relay: pair me with the hub registered as ``hub``."""

    hub: str
    version: int = VERSION
    TYPE = MessageType.REQUEST


@dataclasses.dataclass(frozen=True, slots=True)
class Offer:
    """relay -> hub, on the control connection: a client waits; dial in with ATTACH(token)."""

    token: bytes
    TYPE = MessageType.OFFER


@dataclasses.dataclass(frozen=True, slots=True)
class Attach:
    """hub -> relay, first on a data connection."""

    token: bytes
    version: int = VERSION
    TYPE = MessageType.ATTACH


@dataclasses.dataclass(frozen=True, slots=True)
class Paired:
    """relay -> both: what follows is the other end's bytes."""

    TYPE = MessageType.PAIRED


@dataclasses.dataclass(frozen=True, slots=True)
class Error:
    code: Code | int
    message: str
    TYPE = MessageType.ERROR


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    TYPE = MessageType.PING


@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    TYPE = MessageType.PONG


Message = Register | Registered | Request | Offer | Attach | Paired | Error | Ping | Pong


class RendezvousError(RemoteProtocolError):
    """A RemoteProtocolError with the ERROR code the relay answers it with."""

    def __init__(self, message: str, reason: Code = Code.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


# --- the preamble --------------------------------------------------------------------------------


def preamble(role: Role) -> bytes:
    return PREAMBLE + role.value


def classify(data: bytes) -> Role | None:
    """The role a connection's first bytes announce; None until PREAMBLE_SIZE bytes are there."""
    if data[: len(PREAMBLE)] != PREAMBLE[: len(data)]:
        first = data[:1]
        hint = " (a TLS client dialling the relay without comtunnel's preamble?)" if first == b"\x16" else ""
        raise RemoteProtocolError(f"not a comtunnel relay preamble{hint}")
    if len(data) < PREAMBLE_SIZE:
        return None
    try:
        return Role(data[len(PREAMBLE) : PREAMBLE_SIZE])
    except ValueError:
        raise RemoteProtocolError(f"unknown role {data[len(PREAMBLE) : PREAMBLE_SIZE]!r} in the preamble") from None


# --- messages to and from bytes --------------------------------------------------------------------


def encode(message: Message) -> bytes:
    body: bytes = msgpack.packb(_fields(message), use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


def _fields(message: Message) -> list[Any]:
    t = int(message.TYPE)
    match message:
        case Register(version):
            return [t, version]
        case Registered(names):
            return [t, list(names)]
        case Request(hub, version):
            return [t, version, hub]
        case Offer(token):
            return [t, token]
        case Attach(token, version):
            return [t, version, token]
        case Error(code, text):
            return [t, int(code), text]
        case Paired() | Ping() | Pong():
            return [t]
    raise TypeError(f"cannot encode {message!r}")


def decode(body: bytes | memoryview) -> Message:
    """One message body. Raises only RemoteProtocolError."""
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types; wrap only this call
        raise RemoteProtocolError(f"undecodable rendezvous message: {type(exc).__name__}") from None
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise RemoteProtocolError("rendezvous message is not an array starting with a type code")
    try:
        kind = MessageType(obj[0])
    except ValueError:
        raise RemoteProtocolError(f"unknown rendezvous message type {obj[0]}") from None
    fields = obj[1:]
    shape = _SHAPES[kind]
    if len(fields) != len(shape) or not all(type(f) is want for f, want in zip(fields, shape, strict=True)):
        names = ", ".join(t.__name__ for t in shape) or "nothing"
        raise RemoteProtocolError(f"{kind.name} must carry {names}")
    match kind:
        case MessageType.REGISTER:
            return Register(_count(fields[0], "version"))
        case MessageType.REGISTERED:
            if len(fields[0]) > MAX_NAMES:
                raise RemoteProtocolError(f"REGISTERED with more than {MAX_NAMES} names")
            return Registered(tuple(_name(n) for n in fields[0]))
        case MessageType.REQUEST:
            return Request(_name(fields[1]), _count(fields[0], "version"))
        case MessageType.OFFER:
            return Offer(_token(fields[0]))
        case MessageType.ATTACH:
            return Attach(_token(fields[1]), _count(fields[0], "version"))
        case MessageType.ERROR:
            if len(fields[1]) > MAX_ERROR_MESSAGE:
                raise RemoteProtocolError("ERROR message too long")
            return Error(Code.coerce(_count(fields[0], "code")), fields[1])
        case MessageType.PAIRED:
            return Paired()
        case MessageType.PING:
            return Ping()
        case MessageType.PONG:
            return Pong()
    raise AssertionError(kind)  # pragma: no cover


_SHAPES: dict[MessageType, tuple[type, ...]] = {
    MessageType.REGISTER: (int,),
    MessageType.REGISTERED: (list,),
    MessageType.REQUEST: (int, str),
    MessageType.OFFER: (bytes,),
    MessageType.ATTACH: (int, bytes),
    MessageType.PAIRED: (),
    MessageType.ERROR: (int, str),
    MessageType.PING: (),
    MessageType.PONG: (),
}


def _count(value: int, what: str) -> int:
    if not 0 <= value < 1 << 32:
        raise RemoteProtocolError(f"{what} {value} out of range")
    return value


def _name(value: object) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise RemoteProtocolError(f"a hub name must be 1 to {MAX_NAME} printable characters")
    return value


def _token(value: bytes) -> bytes:
    if len(value) != TOKEN_SIZE:
        raise RemoteProtocolError(f"a token is {TOKEN_SIZE} bytes, not {len(value)}")
    return value


# --- one end of one connection -----------------------------------------------------------------------


class Phase(enum.Enum):
    START = "start"  # nothing said yet
    CONTROL = "control"  # a hub's registered control connection
    PENDING = "pending"  # a client's request or a hub's attach, waiting for PAIRED
    PAIRED = "paired"  # passing the other end's bytes through
    CLOSED = "closed"  # after ERROR


_K = MessageType
# (role, phase, message type) -> next phase, for messages the *dialler* (hub or client) sends;
# the relay receives exactly these. Messages the relay sends are in _FROM_RELAY.
_FROM_DIALLER: dict[tuple[Role, Phase, MessageType], Phase] = {
    (Role.HUB, Phase.START, _K.REGISTER): Phase.CONTROL,
    (Role.HUB, Phase.START, _K.ATTACH): Phase.PENDING,
    (Role.HUB, Phase.CONTROL, _K.PING): Phase.CONTROL,
    (Role.CLIENT, Phase.START, _K.REQUEST): Phase.PENDING,
}
_FROM_RELAY: dict[tuple[Role, Phase, MessageType], Phase] = {
    (Role.HUB, Phase.CONTROL, _K.REGISTERED): Phase.CONTROL,
    (Role.HUB, Phase.CONTROL, _K.OFFER): Phase.CONTROL,
    (Role.HUB, Phase.CONTROL, _K.PONG): Phase.CONTROL,
    (Role.HUB, Phase.CONTROL, _K.ERROR): Phase.CLOSED,
    (Role.HUB, Phase.PENDING, _K.PAIRED): Phase.PAIRED,
    (Role.HUB, Phase.PENDING, _K.ERROR): Phase.CLOSED,
    (Role.HUB, Phase.START, _K.ERROR): Phase.CLOSED,
    (Role.CLIENT, Phase.PENDING, _K.PAIRED): Phase.PAIRED,
    (Role.CLIENT, Phase.PENDING, _K.ERROR): Phase.CLOSED,
    (Role.CLIENT, Phase.START, _K.ERROR): Phase.CLOSED,
}


class Rendezvous:
    """One end of one relay connection: ``relay=True`` on the relay, False in the hub or client
    that dialled it. :meth:`send` returns the bytes to write; :meth:`receive_data` buffers and
    returns the messages now complete, stopping after PAIRED or ERROR."""

    def __init__(self, role: Role, *, relay: bool, max_message: int = MAX_MESSAGE) -> None:
        self.role = role
        self.relay = relay
        self.phase = Phase.START
        self.max_message = max_message
        self._buffer = bytearray()
        self._sends, self._receives = (_FROM_RELAY, _FROM_DIALLER) if relay else (_FROM_DIALLER, _FROM_RELAY)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def send(self, message: Message) -> bytes:
        key = (self.role, self.phase, message.TYPE)
        if key not in self._sends:
            raise LocalProtocolError(f"cannot send {message.TYPE.name} in phase {self.phase.value} as {self.role.name}")
        self.phase = self._sends[key]
        return encode(message)

    def receive_data(self, data: bytes) -> list[Message]:
        """Raises only RemoteProtocolError. After PAIRED the bytes are no longer ours: see
        :meth:`passthrough`; after ERROR they are dropped."""
        if self.phase is Phase.CLOSED:
            return []
        self._buffer += data
        if self.phase is Phase.PAIRED:
            return []
        out: list[Message] = []
        offset = 0
        buf = self._buffer
        phase: Phase = self.phase
        while len(buf) - offset >= HEADER_SIZE and phase not in (Phase.PAIRED, Phase.CLOSED):
            (length,) = _LENGTH.unpack_from(buf, offset)
            if length > self.max_message:
                raise RemoteProtocolError(f"rendezvous message of {length} bytes exceeds {self.max_message}")
            start = offset + HEADER_SIZE
            if len(buf) - start < length:
                break
            message = decode(bytes(buf[start : start + length]))
            offset = start + length
            phase = self._accept(message)
            out.append(message)
        del buf[:offset]
        if phase is Phase.CLOSED:
            buf.clear()
        return out

    def _accept(self, message: Message) -> Phase:
        key = (self.role, self.phase, message.TYPE)
        if key not in self._receives:
            who = "the relay" if not self.relay else f"a {self.role.name.lower()}"
            raise RemoteProtocolError(f"{who} sent {message.TYPE.name} in phase {self.phase.value}")
        version = getattr(message, "version", VERSION)
        if version != VERSION:
            raise RendezvousError(f"rendezvous version {version}; this relay speaks {VERSION}", Code.VERSION_MISMATCH)
        self.phase = self._receives[key]
        return self.phase

    def passthrough(self) -> bytes:
        """After PAIRED: the bytes received after it (the other end's), handed over once."""
        if self.phase is not Phase.PAIRED:
            raise LocalProtocolError("passthrough before PAIRED")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data
