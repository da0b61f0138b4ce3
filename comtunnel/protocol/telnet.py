"""Telnet stream codec and option negotiation (RFC 854, 855, 856, 1143), sans I/O.

Theory of operation: :meth:`TelnetConnection.receive_data` splits the byte stream at IAC with
``bytes.find`` (plain data is sliced, never walked byte by byte), un-doubles ``IAC IAC``, collects
subnegotiations (bounded), and answers option requests with the Q method of RFC 1143 so that
negotiation can never loop: we answer a request only when it changes an option's state, and never
acknowledge a state that is already in effect (RFC 854, "rules for option negotiation").

BINARY (RFC 856) is agreed per direction. Where it is not in effect, NVT rules apply to that
direction: a CR we send is followed by NUL unless LF follows, and a CR NUL we receive loses its NUL.

Events are returned in stream order; a parse state that ends mid-sequence (IAC at the end of a
chunk, an SB split anywhere) is kept, so any split of the input yields the same events.
"""

from __future__ import annotations

import dataclasses
import enum

from .errors import RemoteProtocolError

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
GA = 249
NOP = 241
SE = 240

BINARY = 0
ECHO = 1
SGA = 3
COM_PORT_OPTION = 44

MAX_SUBNEGOTIATION = 1024
_IAC_BYTE = b"\xff"


@dataclasses.dataclass(frozen=True, slots=True)
class TelnetData:
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class OptionChanged:
    """An option's state changed. ``local``: our side (WILL/WONT); else the peer's side (DO/DONT)."""

    option: int
    local: bool
    enabled: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Subnegotiation:
    option: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """A bare telnet command (NOP, BRK, AYT, GA...), reported and otherwise ignored."""

    code: int


TelnetEvent = TelnetData | OptionChanged | Subnegotiation | Command


class Q(enum.Enum):
    """RFC 1143 option states (without the queue bits: we never change our mind mid-negotiation)."""

    NO = 0
    YES = 1
    WANTNO = 2
    WANTYES = 3


class _Parse(enum.Enum):
    DATA = 0
    IAC = 1
    OPTION = 2  # after IAC WILL/WONT/DO/DONT
    SB_OPTION = 3  # after IAC SB
    SB = 4
    SB_IAC = 5


class TelnetConnection:
    """``local``: options we are willing to enable on our side; ``remote``: options we accept from the peer."""

    def __init__(self, local: set[int], remote: set[int], max_subnegotiation: int = MAX_SUBNEGOTIATION) -> None:
        self.local_supported = local
        self.remote_supported = remote
        self.max_subnegotiation = max_subnegotiation
        self._us: dict[int, Q] = {}
        self._him: dict[int, Q] = {}
        self._out: list[bytes] = []
        self._state = _Parse.DATA
        self._verb = 0
        self._sb_option = 0
        self._sb = bytearray()
        self._cr_pending = False  # NVT: the last data byte was CR; a NUL right after it is dropped

    # --- queries ----------------------------------------------------------------------------------

    def local_enabled(self, option: int) -> bool:
        return self._us.get(option) is Q.YES

    def remote_enabled(self, option: int) -> bool:
        return self._him.get(option) is Q.YES

    # --- output -----------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_data(self, data: bytes) -> None:
        if not data:
            return
        if not self.local_enabled(BINARY):
            data = data.replace(b"\r", b"\r\x00").replace(b"\r\x00\n", b"\r\n")
        self._out.append(data.replace(_IAC_BYTE, b"\xff\xff"))

    def send_subnegotiation(self, option: int, payload: bytes) -> None:
        self._out.append(bytes((IAC, SB, option)) + payload.replace(_IAC_BYTE, b"\xff\xff") + bytes((IAC, SE)))

    def request_local(self, option: int, enable: bool = True) -> None:
        """Offer (WILL) or withdraw (WONT) an option on our side."""
        self._request(self._us, option, enable, WILL if enable else WONT)

    def request_remote(self, option: int, enable: bool = True) -> None:
        """Ask the peer to enable (DO) or disable (DONT) an option on its side."""
        self._request(self._him, option, enable, DO if enable else DONT)

    def _request(self, table: dict[int, Q], option: int, enable: bool, verb: int) -> None:
        state = table.get(option, Q.NO)
        if enable and state is Q.NO:
            table[option] = Q.WANTYES
            self._send_verb(verb, option)
        elif not enable and state is Q.YES:
            table[option] = Q.WANTNO
            self._send_verb(verb, option)

    def _send_verb(self, verb: int, option: int) -> None:
        self._out.append(bytes((IAC, verb, option)))

    # --- input ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[TelnetEvent]:
        events: list[TelnetEvent] = []
        chunks: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _Parse.DATA:
                nxt = data.find(_IAC_BYTE, pos)
                if nxt < 0:
                    chunks.append(data[pos:])
                    break
                if nxt > pos:
                    chunks.append(data[pos:nxt])
                self._state = _Parse.IAC
                pos = nxt + 1
                continue
            if state is _Parse.SB:
                nxt = data.find(_IAC_BYTE, pos)
                stop = end if nxt < 0 else nxt
                self._sb += data[pos:stop]
                self._check_sb_size()
                if nxt < 0:
                    break
                self._state = _Parse.SB_IAC
                pos = nxt + 1
                continue
            byte = data[pos]
            pos += 1
            if state is _Parse.IAC:
                if byte == IAC:
                    chunks.append(_IAC_BYTE)
                    self._state = _Parse.DATA
                    continue
                self._flush_data(chunks, events)
                if byte in (WILL, WONT, DO, DONT):
                    self._verb = byte
                    self._state = _Parse.OPTION
                elif byte == SB:
                    self._state = _Parse.SB_OPTION
                else:
                    events.append(Command(byte))  # includes a stray SE: ignored
                    self._state = _Parse.DATA
            elif state is _Parse.OPTION:
                self._state = _Parse.DATA
                event = self._negotiate(self._verb, byte)
                if event is not None:
                    events.append(event)
            elif state is _Parse.SB_OPTION:
                self._sb_option = byte
                self._sb.clear()
                self._state = _Parse.SB
            elif state is _Parse.SB_IAC:
                if byte == IAC:
                    self._sb.append(IAC)
                    self._check_sb_size()
                    self._state = _Parse.SB
                else:
                    # IAC SE ends the SB (RFC 855). Any other command also ends it: be lenient, as
                    # peers that forget SE exist, then treat that command normally.
                    events.append(Subnegotiation(self._sb_option, bytes(self._sb)))
                    self._sb.clear()
                    self._state = _Parse.DATA
                    if byte != SE:
                        self._state = _Parse.IAC
                        pos -= 1
        self._flush_data(chunks, events)
        return events

    def _check_sb_size(self) -> None:
        if len(self._sb) > self.max_subnegotiation:
            raise RemoteProtocolError(f"telnet subnegotiation longer than {self.max_subnegotiation} bytes")

    def _flush_data(self, chunks: list[bytes], events: list[TelnetEvent]) -> None:
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if not self.remote_enabled(BINARY):
            data = self._nvt_input(data)
        if data:
            events.append(TelnetData(data))

    def _nvt_input(self, data: bytes) -> bytes:
        if self._cr_pending and data[:1] == b"\x00":
            data = data[1:]
        self._cr_pending = data[-1:] == b"\r"
        return data.replace(b"\r\x00", b"\r")

    def _negotiate(self, verb: int, option: int) -> OptionChanged | None:
        """RFC 1143 section 7, for one received WILL/WONT/DO/DONT."""
        local = verb in (DO, DONT)
        table = self._us if local else self._him
        supported = (self.local_supported if local else self.remote_supported).__contains__(option)
        positive = verb in (WILL, DO)
        yes_verb, no_verb = (WILL, WONT) if local else (DO, DONT)
        state = table.get(option, Q.NO)
        if positive:
            if state is Q.NO:
                if supported:
                    table[option] = Q.YES
                    self._send_verb(yes_verb, option)
                    return OptionChanged(option, local, True)
                self._send_verb(no_verb, option)
                return None
            if state is Q.WANTYES:
                table[option] = Q.YES
                return OptionChanged(option, local, True)
            if state is Q.WANTNO:  # the peer answered our "no" with "yes": RFC 1143 calls it an error
                table[option] = Q.NO
            return None
        if state is Q.YES:
            table[option] = Q.NO
            self._send_verb(no_verb, option)
            return OptionChanged(option, local, False)
        if state in (Q.WANTNO, Q.WANTYES):
            table[option] = Q.NO
            return OptionChanged(option, local, False) if state is Q.WANTNO else None
        return None
