"""RFC 2217 (Telnet Com Port Control Option) for both roles, on top of :mod:`telnet`, sans I/O.

Theory of operation:

* Commands travel as ``IAC SB COM-PORT-OPTION <code> <value...> IAC SE``; the client uses codes
  0..12, the access server answers with code + 100 (RFC 2217, "Com Port Option").
* Every SET-* is answered with the value now in effect, and value 0 means "tell me the current
  value" (baud rate 0, data size 0, SET-CONTROL 0/4/7/10/13). The server machine turns requests
  into events; the adapter applies them to a port and calls the matching ``ack_*`` with what the
  port really has. The parser never touches a device.
* Acknowledgements are matched per signal group (BREAK, DTR, RTS, outbound flow, inbound flow),
  not by order, because real servers skip some (ser2net does not answer DTR on a PTY).
* SB payloads are IAC-doubled on the wire (baud rates containing 0xFF, masks of 255); the telnet
  layer handles that. Malformed commands (a 2-byte baud rate) become :class:`ProtocolWarning`
  events and are ignored: one sloppy peer is no reason to drop its data.
* FLOWCONTROL-SUSPEND/RESUME are reported, not enforced: ser2net and pyserial ignore them too, and
  hub4com sends SUSPEND in its opening burst.
"""

from __future__ import annotations

import dataclasses

from . import telnet
from .settings import MAX_BAUDRATE, MIN_BAUDRATE, ModemLines, Parity, Purge, StopBits

SIGNATURE = 0
SET_BAUDRATE = 1
SET_DATASIZE = 2
SET_PARITY = 3
SET_STOPSIZE = 4
SET_CONTROL = 5
NOTIFY_LINESTATE = 6
NOTIFY_MODEMSTATE = 7
FLOWCONTROL_SUSPEND = 8
FLOWCONTROL_RESUME = 9
SET_LINESTATE_MASK = 10
SET_MODEMSTATE_MASK = 11
PURGE_DATA = 12
SERVER_OFFSET = 100

# SET-CONTROL values (RFC 2217, "SET-CONTROL")
FLOW_REQUEST = 0
FLOW_NONE = 1
FLOW_XONXOFF = 2
FLOW_HARDWARE = 3
BREAK_REQUEST = 4
BREAK_ON = 5
BREAK_OFF = 6
DTR_REQUEST = 7
DTR_ON = 8
DTR_OFF = 9
RTS_REQUEST = 10
RTS_ON = 11
RTS_OFF = 12
INFLOW_REQUEST = 13
INFLOW_NONE = 14
INFLOW_XONXOFF = 15
INFLOW_HARDWARE = 16
FLOW_DCD = 17
INFLOW_DTR = 18
FLOW_DSR = 19

CONTROL_GROUPS = {
    **dict.fromkeys((FLOW_REQUEST, FLOW_NONE, FLOW_XONXOFF, FLOW_HARDWARE, FLOW_DCD, FLOW_DSR), "outflow"),
    **dict.fromkeys((BREAK_REQUEST, BREAK_ON, BREAK_OFF), "break"),
    **dict.fromkeys((DTR_REQUEST, DTR_ON, DTR_OFF), "dtr"),
    **dict.fromkeys((RTS_REQUEST, RTS_ON, RTS_OFF), "rts"),
    **dict.fromkeys((INFLOW_REQUEST, INFLOW_NONE, INFLOW_XONXOFF, INFLOW_HARDWARE, INFLOW_DTR), "inflow"),
}

PARITY_CODES = {Parity.NONE: 1, Parity.ODD: 2, Parity.EVEN: 3, Parity.MARK: 4, Parity.SPACE: 5}
PARITY_BY_CODE = {v: k for k, v in PARITY_CODES.items()}
STOPSIZE_CODES = {StopBits.ONE: 1, StopBits.TWO: 2, StopBits.ONE_POINT_FIVE: 3}
STOPSIZE_BY_CODE = {v: k for k, v in STOPSIZE_CODES.items()}
MODEM_DELTA = {ModemLines.CTS: 0x01, ModemLines.DSR: 0x02, ModemLines.RI: 0x04, ModemLines.CD: 0x08}


# --- events ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SerialDataReceived:
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolWarning:
    """The peer sent something malformed that we ignored."""

    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class BaudRateRequested:
    baudrate: int | None  # None: a query
    refused: int | None = None  # a rate no serial port has (0 < refused is out of range): answer as a query


@dataclasses.dataclass(frozen=True, slots=True)
class DataSizeRequested:
    bits: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class ParityRequested:
    parity: Parity | None


@dataclasses.dataclass(frozen=True, slots=True)
class StopSizeRequested:
    stopbits: StopBits | None


@dataclasses.dataclass(frozen=True, slots=True)
class ComControlRequested:
    """A SET-CONTROL value (see the constants); queries are 0, 4, 7, 10 and 13."""

    code: int


@dataclasses.dataclass(frozen=True, slots=True)
class ComPurgeRequested:
    which: Purge


@dataclasses.dataclass(frozen=True, slots=True)
class MaskSet:
    modem: bool  # True: SET-MODEMSTATE-MASK, False: SET-LINESTATE-MASK
    mask: int


@dataclasses.dataclass(frozen=True, slots=True)
class ModemStateRequested:
    """The client polls the modem state (pyserial's ``poll_modem``): answer with NOTIFY-MODEMSTATE."""


@dataclasses.dataclass(frozen=True, slots=True)
class FlowSuspended:
    suspended: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SignatureRequested:
    text: str  # empty: the client asks for ours


@dataclasses.dataclass(frozen=True, slots=True)
class BaudRateAcked:
    baudrate: int


@dataclasses.dataclass(frozen=True, slots=True)
class DataSizeAcked:
    bits: int


@dataclasses.dataclass(frozen=True, slots=True)
class ParityAcked:
    parity: Parity


@dataclasses.dataclass(frozen=True, slots=True)
class StopSizeAcked:
    stopbits: StopBits


@dataclasses.dataclass(frozen=True, slots=True)
class ControlAcked:
    group: str
    code: int


@dataclasses.dataclass(frozen=True, slots=True)
class PurgeAcked:
    which: int


@dataclasses.dataclass(frozen=True, slots=True)
class ModemStateNotified:
    lines: ModemLines
    deltas: int


@dataclasses.dataclass(frozen=True, slots=True)
class LineStateNotified:
    bits: int


@dataclasses.dataclass(frozen=True, slots=True)
class SignatureReceived:
    text: str


Event = object


# --- shared base -------------------------------------------------------------------------------------


class _ComPort:
    def __init__(self, local: set[int], remote: set[int]) -> None:
        self.telnet = telnet.TelnetConnection(local, remote)

    def data_to_send(self) -> bytes:
        return self.telnet.data_to_send()

    def send_data(self, data: bytes) -> None:
        self.telnet.send_data(data)

    def _command(self, code: int, value: bytes = b"") -> None:
        self.telnet.send_subnegotiation(telnet.COM_PORT_OPTION, bytes((code,)) + value)

    def receive_data(self, data: bytes) -> list[Event]:
        """Bytes from the peer -> events. Raises RemoteProtocolError only for an oversized SB."""
        out: list[Event] = []
        for event in self.telnet.receive_data(data):
            if isinstance(event, telnet.TelnetData):
                out.append(SerialDataReceived(event.data))
            elif isinstance(event, telnet.Subnegotiation) and event.option == telnet.COM_PORT_OPTION:
                if not event.payload:
                    out.append(ProtocolWarning("empty COM-PORT-OPTION subnegotiation"))
                else:
                    out.append(self._com_port(event.payload[0], event.payload[1:]))
        return out

    def _com_port(self, code: int, value: bytes) -> Event:
        raise NotImplementedError


def _byte(value: bytes, name: str) -> int | ProtocolWarning:
    if len(value) != 1:
        return ProtocolWarning(f"{name} with {len(value)} value bytes instead of 1")
    return value[0]


# --- access server -----------------------------------------------------------------------------------


class Rfc2217Server(_ComPort):
    """The access-server role: what pyserial's ``rfc2217://`` and hub4com's client talk to."""

    def __init__(self) -> None:
        opts = {telnet.BINARY, telnet.SGA, telnet.COM_PORT_OPTION}
        super().__init__(local=opts, remote=opts)
        self.modem_mask = 0xFF  # RFC 2217 default
        self.line_mask = 0
        self._last_modem: ModemLines | None = None

    def start(self) -> None:
        """Our opening: binary both ways, no go-ahead, and ask the client for COM-PORT-OPTION."""
        self.telnet.request_local(telnet.BINARY)
        self.telnet.request_remote(telnet.BINARY)
        self.telnet.request_local(telnet.SGA)
        self.telnet.request_remote(telnet.COM_PORT_OPTION)

    def _com_port(self, code: int, value: bytes) -> Event:
        if code == SIGNATURE:
            return SignatureRequested(value.decode("utf-8", "replace"))
        if code == SET_BAUDRATE:
            if len(value) != 4:
                return ProtocolWarning(f"SET-BAUDRATE with {len(value)} value bytes instead of 4")
            baud = int.from_bytes(value, "big")
            if baud and not MIN_BAUDRATE <= baud <= MAX_BAUDRATE:
                return BaudRateRequested(None, refused=baud)
            return BaudRateRequested(baud or None)
        if code in (FLOWCONTROL_SUSPEND, FLOWCONTROL_RESUME):
            return FlowSuspended(code == FLOWCONTROL_SUSPEND)
        if code in (
            SET_DATASIZE,
            SET_PARITY,
            SET_STOPSIZE,
            SET_CONTROL,
            SET_LINESTATE_MASK,
            SET_MODEMSTATE_MASK,
            PURGE_DATA,
        ):
            b = _byte(value, f"command {code}")
            if isinstance(b, ProtocolWarning):
                return b
            return self._one_byte(code, b)
        return ProtocolWarning(f"unexpected COM-PORT-OPTION command {code} from the client")

    def _one_byte(self, code: int, b: int) -> Event:
        if code == SET_DATASIZE:
            if b and not 5 <= b <= 8:
                return ProtocolWarning(f"SET-DATASIZE {b} is not 5..8")
            return DataSizeRequested(b or None)
        if code == SET_PARITY:
            if b and b not in PARITY_BY_CODE:
                return ProtocolWarning(f"SET-PARITY {b} is not 1..5")
            return ParityRequested(PARITY_BY_CODE.get(b))
        if code == SET_STOPSIZE:
            if b and b not in STOPSIZE_BY_CODE:
                return ProtocolWarning(f"SET-STOPSIZE {b} is not 1..3")
            return StopSizeRequested(STOPSIZE_BY_CODE.get(b))
        if code == SET_CONTROL:
            if b not in CONTROL_GROUPS:
                return ProtocolWarning(f"SET-CONTROL {b} is not 0..19")
            return ComControlRequested(b)
        if code == PURGE_DATA:
            if not 1 <= b <= 3:
                return ProtocolWarning(f"PURGE-DATA {b} is not 1..3")
            return ComPurgeRequested(Purge(b))
        modem = code == SET_MODEMSTATE_MASK
        if modem:
            self.modem_mask = b
        else:
            self.line_mask = b
        return MaskSet(modem, b)

    # answers, with the value in effect

    def ack_baudrate(self, baud: int) -> None:
        self._command(SERVER_OFFSET + SET_BAUDRATE, baud.to_bytes(4, "big"))

    def ack_datasize(self, bits: int) -> None:
        self._command(SERVER_OFFSET + SET_DATASIZE, bytes((bits,)))

    def ack_parity(self, parity: Parity) -> None:
        self._command(SERVER_OFFSET + SET_PARITY, bytes((PARITY_CODES[parity],)))

    def ack_stopsize(self, stopbits: StopBits) -> None:
        self._command(SERVER_OFFSET + SET_STOPSIZE, bytes((STOPSIZE_CODES[stopbits],)))

    def ack_control(self, code: int) -> None:
        self._command(SERVER_OFFSET + SET_CONTROL, bytes((code,)))

    def ack_purge(self, which: Purge) -> None:
        self._command(SERVER_OFFSET + PURGE_DATA, bytes((int(which),)))

    def ack_mask(self, modem: bool, mask: int) -> None:
        self._command(SERVER_OFFSET + (SET_MODEMSTATE_MASK if modem else SET_LINESTATE_MASK), bytes((mask,)))

    def send_signature(self, text: str) -> None:
        self._command(SERVER_OFFSET + SIGNATURE, text.encode("utf-8"))

    def notify_modem_state(self, lines: ModemLines, *, force: bool = False) -> bool:
        """Send NOTIFY-MODEMSTATE with delta bits if the client's mask lets it through."""
        previous = self._last_modem
        deltas = 0
        if previous is not None:
            for line, bit in MODEM_DELTA.items():
                if (lines ^ previous) & line and (line is not ModemLines.RI or previous & ModemLines.RI):
                    deltas |= bit  # RI reports only its trailing edge (RFC 2217)
        self._last_modem = lines
        value = int(lines) | deltas
        if not force and (previous == lines or not value & self.modem_mask):
            return False
        self._command(SERVER_OFFSET + NOTIFY_MODEMSTATE, bytes((value & self.modem_mask,)))
        return True

    def notify_line_state(self, bits: int) -> bool:
        if not bits & self.line_mask:
            return False
        self._command(SERVER_OFFSET + NOTIFY_LINESTATE, bytes((bits & self.line_mask,)))
        return True


# --- client ------------------------------------------------------------------------------------------


class Rfc2217Client(_ComPort):
    """The client role: how the hub takes ports from ser2net or another RFC 2217 server."""

    def __init__(self) -> None:
        super().__init__(
            local={telnet.BINARY, telnet.SGA, telnet.COM_PORT_OPTION},
            remote={telnet.BINARY, telnet.SGA},
        )
        self._pending: dict[str, int] = {}

    def start(self) -> None:
        self.telnet.request_local(telnet.COM_PORT_OPTION)
        self.telnet.request_local(telnet.BINARY)
        self.telnet.request_remote(telnet.BINARY)
        self.telnet.request_remote(telnet.SGA)

    def pending(self) -> dict[str, int]:
        """Requests not acknowledged yet, by group ('baudrate', 'dtr', 'purge'...): the adapter times them out."""
        return dict(self._pending)

    def _ask(self, group: str, code: int, value: bytes, remember: int) -> None:
        self._pending[group] = remember
        self._command(code, value)

    def set_baudrate(self, baud: int) -> None:
        self._ask("baudrate", SET_BAUDRATE, baud.to_bytes(4, "big"), baud)

    def set_datasize(self, bits: int) -> None:
        self._ask("datasize", SET_DATASIZE, bytes((bits,)), bits)

    def set_parity(self, parity: Parity) -> None:
        self._ask("parity", SET_PARITY, bytes((PARITY_CODES[parity],)), PARITY_CODES[parity])

    def set_stopsize(self, stopbits: StopBits) -> None:
        self._ask("stopsize", SET_STOPSIZE, bytes((STOPSIZE_CODES[stopbits],)), STOPSIZE_CODES[stopbits])

    def set_control(self, code: int) -> None:
        self._ask(CONTROL_GROUPS[code], SET_CONTROL, bytes((code,)), code)

    def purge(self, which: Purge) -> None:
        self._ask("purge", PURGE_DATA, bytes((int(which),)), int(which))

    def set_modemstate_mask(self, mask: int) -> None:
        self._command(SET_MODEMSTATE_MASK, bytes((mask,)))

    def set_linestate_mask(self, mask: int) -> None:
        self._command(SET_LINESTATE_MASK, bytes((mask,)))

    def send_signature(self, text: str = "") -> None:
        self._command(SIGNATURE, text.encode("utf-8"))

    def _com_port(self, code: int, value: bytes) -> Event:
        if code < SERVER_OFFSET:
            return ProtocolWarning(f"client command {code} received from the server")
        code -= SERVER_OFFSET
        if code == SIGNATURE:
            return SignatureReceived(value.decode("utf-8", "replace"))
        if code == SET_BAUDRATE:
            if len(value) != 4:
                return ProtocolWarning(f"SET-BAUDRATE reply with {len(value)} value bytes")
            self._pending.pop("baudrate", None)
            return BaudRateAcked(int.from_bytes(value, "big"))
        if code in (FLOWCONTROL_SUSPEND, FLOWCONTROL_RESUME):
            return FlowSuspended(code == FLOWCONTROL_SUSPEND)
        b = _byte(value, f"reply {code + SERVER_OFFSET}")
        if isinstance(b, ProtocolWarning):
            return b
        return self._reply(code, b)

    def _reply(self, code: int, b: int) -> Event:
        if code == SET_DATASIZE:
            self._pending.pop("datasize", None)
            return DataSizeAcked(b)
        if code == SET_PARITY and b in PARITY_BY_CODE:
            self._pending.pop("parity", None)
            return ParityAcked(PARITY_BY_CODE[b])
        if code == SET_STOPSIZE and b in STOPSIZE_BY_CODE:
            self._pending.pop("stopsize", None)
            return StopSizeAcked(STOPSIZE_BY_CODE[b])
        if code == SET_CONTROL and b in CONTROL_GROUPS:
            group = CONTROL_GROUPS[b]
            self._pending.pop(group, None)
            return ControlAcked(group, b)
        if code == PURGE_DATA:
            self._pending.pop("purge", None)
            return PurgeAcked(b)
        if code == NOTIFY_MODEMSTATE:
            return ModemStateNotified(ModemLines(b & 0xF0), b & 0x0F)
        if code == NOTIFY_LINESTATE:
            return LineStateNotified(b)
        if code in (SET_LINESTATE_MASK, SET_MODEMSTATE_MASK):
            return MaskSet(code == SET_MODEMSTATE_MASK, b)
        return ProtocolWarning(f"unexpected reply {code + SERVER_OFFSET} value {b}")
