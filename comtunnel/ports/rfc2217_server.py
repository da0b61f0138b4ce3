"""An RFC 2217 access server as a port: a telnet client (pyserial ``rfc2217://``, hub4com, esptool)
gets full control of the serial line behind it, DTR/RTS/BREAK and modem lines included.

Requests become listener calls (``app_settings``, ``app_control``, ``app_purge``) and are
acknowledged with the value then in effect on our side: acks do not wait for the far device, so
pyserial's open (which waits for each ack in turn) takes milliseconds, not round trips. Modem
lines reported by the far side (``set_modem_lines``) become NOTIFY-MODEMSTATE, filtered by the
client's mask. Each connection starts from a clean codec (masks back to their defaults) and the
initial line settings, also one that took the port over from another (``takeover``).
"""

from __future__ import annotations

import asyncio
import logging

from comtunnel import __version__, lograte
from comtunnel.ports.network import NetworkServerPort
from comtunnel.protocol import rfc2217 as r
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings

log = logging.getLogger(__name__)

_CONTROL_REQUESTS = {
    r.DTR_ON: ControlRequest(dtr=True),
    r.DTR_OFF: ControlRequest(dtr=False),
    r.RTS_ON: ControlRequest(rts=True),
    r.RTS_OFF: ControlRequest(rts=False),
    r.BREAK_ON: ControlRequest(break_=True),
    r.BREAK_OFF: ControlRequest(break_=False),
}


class Rfc2217ServerPort(NetworkServerPort):
    kind = "RFC 2217"

    codec: r.Rfc2217Server  # one per TCP session, made when it starts
    _transport: asyncio.Transport | None = None
    _refused_baud = False  # this session asked for a rate no port has: said once

    def _session_started(self, transport: asyncio.Transport) -> None:
        self.codec = r.Rfc2217Server()
        self._transport = transport
        self.settings = PortSettings()  # every client starts from a clean state, as the port began
        self.control = ControlState()
        self._refused_baud = False
        self.codec.start()
        self.codec.notify_modem_state(self.modem, force=True)
        self._flush()

    def _session_ended(self) -> None:
        self._transport = None

    def _flush(self) -> None:
        data = self.codec.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _transmit(self, transport: asyncio.Transport, data: bytes) -> None:
        self.codec.send_data(data)
        self._flush()

    def set_modem_lines(self, lines: ModemLines) -> None:
        super().set_modem_lines(lines)
        if self._transport is not None:
            self.codec.notify_modem_state(lines)
            self._flush()

    def _received(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("%s: RFC 2217 client %s broke the protocol: %s", self.name, self.peer, exc)
            self.refuse_current(str(exc))
            return
        for event in events:
            self._handle(event)
        self._flush()

    def _handle(self, event: object) -> None:
        listener, codec, s = self._listener, self.codec, self.settings
        match event:
            case r.SerialDataReceived(data):
                if listener is not None:
                    listener.port_data(data)
            case r.BaudRateRequested(baud, refused):
                if refused is not None and not self._refused_baud:
                    self._refused_baud = True  # once per connection: a client may repeat it forever
                    log.warning(
                        "%s: %s asked for %d baud, which is out of range; answered with the rate in effect",
                        self.name,
                        self.peer,
                        refused,
                    )
                self._change(s.replace(baudrate=baud) if baud else s)
                codec.ack_baudrate(self.settings.baudrate)
            case r.DataSizeRequested(bits):
                self._change(s.replace(bytesize=bits) if bits else s)
                codec.ack_datasize(self.settings.bytesize)
            case r.ParityRequested(parity):
                self._change(s.replace(parity=parity) if parity else s)
                codec.ack_parity(self.settings.parity)
            case r.StopSizeRequested(stopbits):
                self._change(s.replace(stopbits=stopbits) if stopbits else s)
                codec.ack_stopsize(self.settings.stopbits)
            case r.ComControlRequested(code):
                codec.ack_control(self._control(code))
            case r.ComPurgeRequested(which):
                if listener is not None:
                    listener.app_purge(which)
                codec.ack_purge(which)
            case r.SignatureRequested(text):
                if text:
                    log.info("%s: RFC 2217 client says it is %r", self.name, text)
                else:
                    codec.send_signature(f"comtunnel {__version__} {self.name}")
            case r.ModemStateRequested():
                codec.notify_modem_state(self.modem, force=True)
            case r.MaskSet(modem, mask):
                codec.ack_mask(modem, mask)
            case r.ProtocolWarning(message):
                lograte.warn(
                    log,
                    "ignored RFC 2217 input",
                    self.peer.rpartition(":")[0],
                    "%s: ignored from %s: %s",
                    self.name,
                    self.peer,
                    message,
                    level=logging.INFO,
                )

    def _change(self, settings: PortSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            if self._listener is not None:
                self._listener.app_settings(settings)

    def _control(self, code: int) -> int:
        """Apply a SET-CONTROL and return the code describing the state now in effect."""
        s, c = self.settings, self.control
        if code in _CONTROL_REQUESTS:
            request = _CONTROL_REQUESTS[code]
            self.control = request.apply_to(c)
            if self._listener is not None:
                self._listener.app_control(request)
            return code
        if code in (r.FLOW_NONE, r.FLOW_XONXOFF, r.FLOW_HARDWARE):
            self._change(s.replace(xonxoff=code == r.FLOW_XONXOFF, rtscts=code == r.FLOW_HARDWARE))
            return code
        if code in (r.INFLOW_NONE, r.INFLOW_XONXOFF, r.INFLOW_HARDWARE):
            self._change(s.replace(xonxoff=code == r.INFLOW_XONXOFF, rtscts=code == r.INFLOW_HARDWARE))
            return code
        if code == r.DTR_REQUEST:
            return r.DTR_ON if c.dtr else r.DTR_OFF
        if code == r.RTS_REQUEST:
            return r.RTS_ON if c.rts else r.RTS_OFF
        if code == r.BREAK_REQUEST:
            return r.BREAK_ON if c.break_ else r.BREAK_OFF
        if code == r.FLOW_REQUEST:
            return r.FLOW_HARDWARE if s.rtscts else r.FLOW_XONXOFF if s.xonxoff else r.FLOW_NONE
        if code == r.INFLOW_REQUEST:
            return r.INFLOW_HARDWARE if s.rtscts else r.INFLOW_XONXOFF if s.xonxoff else r.INFLOW_NONE
        # DCD/DSR/DTR flow control: not something we can pass on; answer with what is in effect.
        return r.FLOW_HARDWARE if s.rtscts else r.FLOW_XONXOFF if s.xonxoff else r.FLOW_NONE
