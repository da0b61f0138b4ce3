"""The tunnel connection: handshake, channels, credit windows, keepalive frames.

Theory of operation (docs/wire-format.md has the full picture):

* Both sides send HELLO first; any other frame before the peer's HELLO is a protocol error.
* Only the client opens channels, with strictly increasing ids. The hub answers each OPEN with
  OPEN_OK (granting its receive window) or OPEN_FAIL (a code and a message for the user).
* Closing is a CLOSE each way, as in SSH: the side that receives CLOSE answers CLOSE and forgets
  the channel; the side that sent it forgets it when the answer comes. Frames for a channel we
  are closing are dropped, since the peer could not know.
* DATA is bounded by the receiver's window (see :mod:`flow`); the driver calls :meth:`consume`
  when bytes have reached their port, and WINDOW frames flow back.
* Sessions outlive connections (docs/wire-format.md, "Resumption"): a client whose connection died
  builds its next Connection with ``resume_from=old``; that sends RESUME with each open channel's
  received/consumed offsets, and the hub answers RESUMED with its own (after its driver found the
  old session and called :meth:`accept_resume`) or RESUME_FAIL. Each side then resends from the
  peer's received offset what it holds in the channel's replay buffer, so nothing is lost or doubled.
* A protocol violation queues a GOAWAY with the reason and raises RemoteProtocolError: the driver
  sends what :meth:`data_to_send` returns and closes the transport.

Usage, h2-style: ``events = conn.receive_data(chunk)``; act on the events; call the send methods;
write ``conn.data_to_send()`` to the transport.
"""

from __future__ import annotations

import enum
from typing import Any

from . import events as ev
from . import frames as fr
from . import resume
from .channel import Channel, ChannelInput, ChannelState, Operation
from .codec import FrameDecoder, encode_data, encode_frame
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .flow import SendWindow
from .limits import (
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    MAX_MESSAGE,
    MAX_PORT_NAME,
    MAX_REPLAY_OPERATIONS,
    MAX_WINDOW,
    PROTOCOL_VERSION,
)
from .settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge

__all__ = ["ChannelState", "Connection", "Role"]


class Role(enum.Enum):
    CLIENT = "client"
    HUB = "hub"


# Frames each role may receive; anything else from the peer is a protocol error.
_CLIENT_ONLY = {fr.Open, fr.SetSettings, fr.SetControl, fr.PurgeRequest, fr.Resume}
_HUB_ONLY = {
    fr.OpenOk,
    fr.OpenFail,
    fr.Settings,
    fr.Control,
    fr.Modem,
    fr.Ports,
    fr.Resumed,
    fr.ResumeFail,
    fr.DeviceStatus,
    fr.Flow,
}


class Connection:
    def __init__(
        self,
        role: Role,
        info: dict[str, Any] | None = None,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        window: int = DEFAULT_WINDOW,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        session_token: str | None = None,
        resume_from: Connection | None = None,
    ) -> None:
        """``session_token`` (hub): names this session for a later RESUME; ``resume_from`` (client): the
        Connection that died, whose channels this one continues."""
        self.role = role
        self.window = window
        self.max_channels = max_channels
        self.peer_info: dict[str, Any] | None = None
        self.closed = False
        self._decoder = FrameDecoder(max_frame)
        self._out: list[bytes] = []
        self._channels: dict[int, Channel] = {}
        self._credit_owed: set[int] = set()
        self._last_channel_id = 0
        self._unexpected = _HUB_ONLY if role is Role.HUB else _CLIENT_ONLY
        self.session_token = session_token
        self.resuming = False  # client: RESUME sent, no answer yet
        self._resume_allowed = role is Role.HUB  # hub: only right after HELLO
        hello_info = {"role": role.value, "max_frame": max_frame, **(info or {})}
        if role is Role.HUB and session_token is not None:
            hello_info["session"] = session_token
        self._send(fr.Hello(PROTOCOL_VERSION, hello_info))
        if resume_from is not None:
            self._start_resume(resume_from)

    def _start_resume(self, old: Connection) -> None:
        self._require(Role.CLIENT, "resume a session")
        if old.session_token is None:
            raise LocalProtocolError("the old connection never learned a session token")
        self.session_token = old.session_token
        self._last_channel_id = old._last_channel_id
        carried, offsets = resume.carry_over(old._channels.values())
        self._channels.update((ch.id, ch) for ch in carried)
        self.resuming = True
        self._send(fr.Resume(old.session_token, offsets))

    # --- output ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one write (coalesced)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _send(self, frame: fr.Frame) -> None:
        self._out.append(encode_frame(frame))

    # --- queries ----------------------------------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        return self.peer_info is not None

    def channel_state(self, channel: int) -> ChannelState | None:
        ch = self._channels.get(channel)
        return ch.state if ch else None

    def send_window(self, channel: int) -> int:
        """Bytes we may send on ``channel`` now (0 if it is not open)."""
        ch = self._channels.get(channel)
        return ch.send.available if ch and ch.state is ChannelState.OPEN else 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame the decoder holds (what a connection costs while it waits)."""
        return self._decoder.buffered

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    # --- commands: both roles -----------------------------------------------------------------

    def send_data(self, channel: int, data: bytes | memoryview) -> None:
        """Queue DATA frames; the caller must stay within :meth:`send_window`."""
        ch = self._open_channel(channel)
        ch.send.consume(len(data))
        ch.replay.append(data)
        encode_data(self._out, channel, data)

    def unacknowledged(self, channel: int) -> int:
        """Bytes we sent on ``channel`` that the peer has not confirmed (what a lost session loses)."""
        ch = self._channels.get(channel)
        return len(ch.replay) if ch else 0

    def consume(self, channel: int, size: int) -> None:
        """Return credit for ``size`` received bytes that have been delivered."""
        ch = self._channels.get(channel)
        if ch is None or ch.state not in (ChannelState.OPEN, ChannelState.RESUMING):
            return  # credit for a closed channel is meaningless
        increment = ch.recv.consumed(size)
        if not increment:
            self._credit_owed.add(channel)  # returned in a batch, or by return_credit() on a quiet line
            return
        self._credit_owed.discard(channel)
        if ch.state is ChannelState.RESUMING:  # the hub may not know the channel yet
            ch.held_credit += increment
        else:
            self._send(fr.WindowUpdate(channel, increment))

    def resize_window(self, channel: int, size: int) -> None:
        """Grant ``size`` bytes of window on ``channel`` from now on (a slow port gets less, so what
        its sender has in flight stays a few hundred milliseconds of the line's worth)."""
        ch = self._channels.get(channel)
        if ch is None or ch.state is not ChannelState.OPEN or size == ch.recv.size:
            return
        size = max(1, min(size, MAX_WINDOW))
        ch.recv.resize(size)
        self._send(fr.WindowUpdate(channel, ch.recv.report_all(), size))
        self._credit_owed.discard(channel)

    def window_size(self, channel: int) -> int:
        """The receive window we grant on ``channel`` now (0 if it is not open)."""
        ch = self._channels.get(channel)
        return ch.recv.size if ch is not None else 0

    @property
    def credit_owed(self) -> bool:
        """Some channel consumed bytes whose credit was not returned yet (less than half a window)."""
        return bool(self._credit_owed)

    def return_credit(self) -> None:
        """Return all owed credit now: on a quiet line the peer learns within moments what arrived,
        instead of only after half a window more (its replay buffer, and what a lost session costs)."""
        for channel in self._credit_owed:
            ch = self._channels.get(channel)
            if ch is None or ch.state is not ChannelState.OPEN:
                continue
            increment = ch.recv.report_all()
            if increment > 0:
                self._send(fr.WindowUpdate(channel, increment))
        self._credit_owed.clear()

    def close_channel(self, channel: int, code: ErrorCode | int = ErrorCode.NORMAL, message: str = "") -> None:
        ch = self._channels.get(channel)
        if ch is None or not ch.apply(ChannelInput.CLOSE):
            return
        ch.close_code, ch.close_message = code, message[:MAX_MESSAGE]
        self._send(fr.Close(channel, code, ch.close_message))

    def report_channel_error(self, channel: int, code: ErrorCode | int, message: str) -> None:
        if self.channel_state(channel) is ChannelState.OPEN:
            self._send(fr.ChannelError(channel, code, message[:MAX_MESSAGE]))

    def ping(self, token: int) -> None:
        self._send(fr.Ping(token))

    def goaway(self, code: ErrorCode | int, message: str) -> None:
        if not self.closed:
            self.closed = True
            self._send(fr.GoAway(code, message[:MAX_MESSAGE]))

    # --- commands: client ---------------------------------------------------------------------

    def open_channel(self, port: str, settings: PortSettings, control: ControlRequest | None = None) -> int:
        self._require(Role.CLIENT, "open channels")
        if len(self._channels) >= self.max_channels:
            raise LocalProtocolError(f"at most {self.max_channels} channels at once")
        if len(port) > MAX_PORT_NAME:  # the hub would take it for a protocol error and drop the connection
            raise LocalProtocolError(f"port name longer than {MAX_PORT_NAME} characters")
        self._last_channel_id += 1
        cid = self._last_channel_id
        self._channels[cid] = Channel(cid, port, ChannelState.OPENING, self.window)
        self._send(fr.Open(cid, port, settings, control or ControlRequest(), self.window))
        return cid

    def request_settings(self, channel: int, settings: PortSettings) -> None:
        self._require(Role.CLIENT, "request settings")
        ch = self._open_channel(channel)
        self._send_operation(ch, fr.SetSettings(channel, settings, ch.ops_sent, ch.send.sent))

    def request_control(self, channel: int, request: ControlRequest) -> None:
        self._require(Role.CLIENT, "request control lines")
        ch = self._open_channel(channel)
        self._send_operation(ch, fr.SetControl(channel, request, ch.ops_sent, ch.send.sent))

    def request_purge(self, channel: int, which: Purge) -> None:
        self._require(Role.CLIENT, "request a purge")
        ch = self._open_channel(channel)
        self._send_operation(ch, fr.PurgeRequest(channel, which, ch.ops_sent, ch.send.sent))

    def _send_operation(self, ch: Channel, frame: Operation) -> None:
        """A line operation takes its place in the channel's byte stream: it applies after the bytes
        sent before it. It is kept, like those bytes, until the peer has surely received it."""
        ch.ops_sent += 1
        ch.operations.append(frame)
        if len(ch.operations) > MAX_REPLAY_OPERATIONS:
            ch.operations.popleft()  # thousands of changes and not one byte after them: keep the newest
        self._send(frame)

    # --- commands: hub ------------------------------------------------------------------------

    def accept_channel(self, channel: int, settings: PortSettings, info: dict[str, Any] | None = None) -> bool:
        """Answer a pending OPEN. False if the client gave up on it meanwhile."""
        ch = self._channels.get(channel)
        if ch is None:
            return False
        ch.apply(ChannelInput.ACCEPT)
        self._send(fr.OpenOk(channel, settings, self.window, info or {}))
        return True

    def reject_channel(self, channel: int, code: ErrorCode | int, message: str) -> bool:
        ch = self._channels.get(channel)
        if ch is None:
            return False
        ch.apply(ChannelInput.REJECT)
        del self._channels[channel]
        self._send(fr.OpenFail(channel, code, message[:MAX_MESSAGE]))
        return True

    def report_settings(self, channel: int, settings: PortSettings) -> None:
        self._require(Role.HUB, "report settings")
        if self.channel_state(channel) is ChannelState.OPEN:
            self._send(fr.Settings(channel, settings))

    def report_control(self, channel: int, state: ControlState) -> None:
        self._require(Role.HUB, "report control lines")
        if self.channel_state(channel) is ChannelState.OPEN:
            self._send(fr.Control(channel, state))

    def report_modem(self, channel: int, lines: ModemLines) -> None:
        self._require(Role.HUB, "report modem lines")
        if self.channel_state(channel) is ChannelState.OPEN:
            self._send(fr.Modem(channel, lines))

    def report_device_status(self, channel: int, state: str, message: str = "") -> None:
        """The device behind ``channel`` went away ("gone") or is back ("open")."""
        self._require(Role.HUB, "report a channel's state")
        if state not in fr.DEVICE_STATES:
            raise LocalProtocolError(f"unknown channel state {state!r}")
        if self.channel_state(channel) is ChannelState.OPEN:
            self._send(fr.DeviceStatus(channel, state, message[:MAX_MESSAGE]))

    def report_flow(self, channel: int, stopped: bool) -> None:
        """The device stopped our output to it (XOFF) or let it go on (XON)."""
        self._require(Role.HUB, "report flow control")
        if self.channel_state(channel) is ChannelState.OPEN:
            self._send(fr.Flow(channel, stopped))

    def accept_resume(self, old: Connection, peer: list[tuple[int, int, int]]) -> list[int]:
        """Hub: continue ``old``'s session on this connection. ``peer`` is the RESUME's channel list.

        Returns the ids of old channels the client no longer has: the driver closes their ports.
        """
        self._require(Role.HUB, "accept a resumption")
        self.session_token = old.session_token
        self._last_channel_id = max(old._last_channel_id, max((cid for cid, _, _ in peer), default=0))
        kept, dropped = resume.accept(old._channels.values(), peer, self._out)
        self._channels.update((ch.id, ch) for ch in kept)
        old._channels.clear()
        old.closed = True
        return dropped

    def refuse_resume(self, code: ErrorCode | int, message: str) -> None:
        self._require(Role.HUB, "refuse a resumption")
        self._send(fr.ResumeFail(code, message[:MAX_MESSAGE]))

    def announce_ports(self, ports: list[dict[str, Any]]) -> None:
        self._require(Role.HUB, "announce ports")
        self._send(fr.Ports(ports))

    # --- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ev.Event]:
        """Feed bytes from the transport; returns the events they complete.

        Raises RemoteProtocolError (after queueing a GOAWAY) when the peer breaks the protocol.
        """
        if self.closed:
            return []
        try:
            frames = self._decoder.feed(data)
            out: list[ev.Event] = []
            parts: list[bytes] = []  # consecutive DATA of one channel: one event, one port write
            settled = self.peer_info is not None and not self._resume_allowed
            channels = self._channels
            for frame in frames:
                if settled and type(frame) is fr.Data:  # the hot path: an open channel's bytes
                    ch = channels.get(frame.channel)
                    if ch is not None and ch.state is ChannelState.OPEN:
                        ch.recv.received(len(frame.data))
                        if parts and out[-1].channel != frame.channel:  # type: ignore[attr-defined]
                            _merge(out, parts)
                        if not parts:
                            out.append(ev.DataReceived(frame.channel, frame.data))
                        parts.append(frame.data)
                        continue
                event = self._handle(frame)
                if type(event) is ev.DataReceived:
                    if parts and out[-1].channel != event.channel:  # type: ignore[attr-defined]
                        _merge(out, parts)
                    if not parts:
                        out.append(event)
                    parts.append(event.data)
                elif event is not None:
                    _merge(out, parts)
                    out.append(event)
                if self.closed:
                    break
            _merge(out, parts)
            return out
        except RemoteProtocolError as exc:
            self.goaway(exc.code, str(exc))
            raise

    def _handle(self, frame: fr.Frame) -> ev.Event | None:
        if type(frame) in self._unexpected:
            raise RemoteProtocolError(f"{frame.TYPE.name} is not allowed from the {self._peer}")
        if self.peer_info is None:
            if not isinstance(frame, fr.Hello):
                raise RemoteProtocolError(f"expected HELLO, got {frame.TYPE.name}")
            if frame.version != PROTOCOL_VERSION:
                older = "the peer's" if frame.version < PROTOCOL_VERSION else "this"
                raise RemoteProtocolError(
                    f"peer speaks protocol version {frame.version}, we speak {PROTOCOL_VERSION}: "
                    f"upgrade {older} comtunnel",
                    ErrorCode.VERSION_MISMATCH,
                )
            self.peer_info = frame.info
            token = frame.info.get("session")
            if self.role is Role.CLIENT and not self.resuming and isinstance(token, str):
                self.session_token = token
            return ev.HandshakeComplete(frame.info)
        if self._resume_allowed and not isinstance(frame, fr.Resume | fr.Ping | fr.Pong):
            self._resume_allowed = False  # RESUME comes first, or never
        handler = _HANDLERS.get(type(frame))
        if handler is None:  # a second HELLO
            raise RemoteProtocolError(f"unexpected {frame.TYPE.name}")
        return handler(self, frame)  # type: ignore[no-any-return]

    @property
    def _peer(self) -> str:
        return "client" if self.role is Role.HUB else "hub"

    def _on_data(self, frame: fr.Data) -> ev.Event | None:
        ch = self._live(frame)
        if ch is None:
            return None
        ch.recv.received(len(frame.data))
        return ev.DataReceived(frame.channel, frame.data)

    def _on_window(self, frame: fr.WindowUpdate) -> ev.Event | None:
        ch = self._live(frame)
        if ch is None:
            return None
        if frame.size is not None:
            if frame.size == 0:
                raise RemoteProtocolError("a window of size 0", ErrorCode.FLOW_CONTROL_ERROR)
            ch.send.resize(frame.size)
        if frame.increment or frame.size is None:
            ch.send.grow(frame.increment)
        ch.replay.trim(ch.send.acked)
        resume.trim_operations(ch, ch.send.acked)
        return ev.WindowOpened(frame.channel, ch.send.available)

    def _on_open(self, frame: fr.Open) -> ev.Event | None:
        if frame.channel <= self._last_channel_id:
            raise RemoteProtocolError(f"channel id {frame.channel} is not new")
        self._last_channel_id = frame.channel
        if len(self._channels) >= self.max_channels:
            self._send(
                fr.OpenFail(
                    frame.channel,
                    ErrorCode.TOO_MANY_CHANNELS,
                    f"this hub allows {self.max_channels} channels per connection",
                )
            )
            return None
        ch = Channel(frame.channel, frame.port, ChannelState.PENDING, self.window)
        ch.send = SendWindow(frame.window)
        self._channels[frame.channel] = ch
        return ev.ChannelOpenRequested(frame.channel, frame.port, frame.settings, frame.control)

    def _on_open_ok(self, frame: fr.OpenOk) -> ev.Event | None:
        ch = self._known(frame.channel, frame)
        if not ch.apply(ChannelInput.OPEN_OK):
            return None
        ch.send = SendWindow(frame.window)
        return ev.ChannelOpened(frame.channel, frame.settings, frame.info)

    def _on_open_fail(self, frame: fr.OpenFail) -> ev.Event | None:
        ch = self._known(frame.channel, frame)
        closing = ch.state is ChannelState.CLOSING
        ch.apply(ChannelInput.OPEN_FAIL)
        del self._channels[frame.channel]
        if closing:
            return ev.ChannelClosed(frame.channel, ch.close_code, ch.close_message, by_peer=False)
        return ev.ChannelOpenFailed(frame.channel, frame.code, frame.message)

    def _on_close(self, frame: fr.Close) -> ev.Event | None:
        if self.role is Role.HUB and frame.channel not in self._channels and 0 < frame.channel <= self._last_channel_id:
            return None  # the client gave up on an OPEN we had refused: its CLOSE crossed our OPEN_FAIL
        ch = self._known(frame.channel, frame)
        closing = ch.state is ChannelState.CLOSING
        ch.apply(ChannelInput.PEER_CLOSE)
        del self._channels[frame.channel]
        if closing:
            return ev.ChannelClosed(frame.channel, ch.close_code, ch.close_message, by_peer=False)
        self._send(fr.Close(frame.channel, ErrorCode.NORMAL, ""))
        return ev.ChannelClosed(frame.channel, frame.code, frame.message, by_peer=True)

    def _on_channel_frame(self, frame: Any) -> ev.Event | None:
        ch = self._live(frame)
        if ch is None:
            return None
        if isinstance(frame, Operation) and not self._in_place(ch, frame):
            return None
        match frame:
            case fr.SetSettings(channel, settings, _, _):
                return ev.SettingsRequested(channel, settings)
            case fr.Settings(channel, settings):
                return ev.SettingsChanged(channel, settings)
            case fr.SetControl(channel, request, _, _):
                return ev.ControlRequested(channel, request)
            case fr.Control(channel, state):
                return ev.ControlChanged(channel, state)
            case fr.Modem(channel, lines):
                return ev.ModemChanged(channel, lines)
            case fr.PurgeRequest(channel, which, _, _):
                return ev.PurgeRequested(channel, which)
            case fr.ChannelError(channel, code, message):
                return ev.ChannelErrorReceived(channel, code, message)
        raise AssertionError(frame)  # pragma: no cover

    def _in_place(self, ch: Channel, frame: Operation) -> bool:
        """True for the next operation, where the byte stream has got to; False for a replayed one we have."""
        if frame.seq < ch.ops_received:
            if frame.offset > ch.recv.received_total:
                raise RemoteProtocolError(f"{frame.TYPE.name} {frame.seq} replayed at a later offset")
            return False
        if frame.seq > ch.ops_received:
            raise RemoteProtocolError(
                f"channel {ch.id}: {frame.TYPE.name} number {frame.seq}, expected {ch.ops_received}"
            )
        if frame.offset != ch.recv.received_total:
            raise RemoteProtocolError(
                f"channel {ch.id}: {frame.TYPE.name} at byte {frame.offset}, but {ch.recv.received_total} arrived"
            )
        ch.ops_received += 1
        return True

    def _on_ping(self, frame: fr.Ping) -> ev.Event | None:
        self._send(fr.Pong(frame.token))
        return None

    def _on_pong(self, frame: fr.Pong) -> ev.Event | None:
        return ev.PongReceived(frame.token)

    def _on_goaway(self, frame: fr.GoAway) -> ev.Event | None:
        self.closed = True
        return ev.ConnectionTerminated(frame.code, frame.message)

    def _on_ports(self, frame: fr.Ports) -> ev.Event | None:
        return ev.PortsUpdated(frame.ports)

    def _on_resume(self, frame: fr.Resume) -> ev.Event | None:
        if not self._resume_allowed:
            raise RemoteProtocolError("RESUME must directly follow HELLO, once")
        self._resume_allowed = False
        ids = [cid for cid, _, _ in frame.channels]
        if len(set(ids)) != len(ids):
            raise RemoteProtocolError("RESUME names a channel twice")
        return ev.ResumeRequested(frame.token, frame.channels)

    def _on_resumed(self, frame: fr.Resumed) -> ev.Event | None:
        if not self.resuming:
            raise RemoteProtocolError("RESUMED without a RESUME")
        self.resuming = False
        kept, lost = resume.resumed(self._channels, frame.channels, self._out)
        return ev.SessionResumed(kept, lost)

    def _on_resume_fail(self, frame: fr.ResumeFail) -> ev.Event | None:
        if not self.resuming:
            raise RemoteProtocolError("RESUME_FAIL without a RESUME")
        self.resuming = False
        self.session_token = self.peer_info.get("session") if self.peer_info else None
        return ev.ResumeRefused(frame.code, frame.message, resume.drop_unresumed(self._channels))

    def _on_flow(self, frame: fr.Flow) -> ev.Event | None:
        if self._live(frame) is None:
            return None
        return ev.FlowChanged(frame.channel, frame.stopped)

    def _on_device_status(self, frame: fr.DeviceStatus) -> ev.Event | None:
        if self._live(frame) is None:
            return None
        return ev.DeviceStatusChanged(frame.channel, frame.state, frame.message)

    # --- helpers ------------------------------------------------------------------------------

    def _require(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"only the {role.value} may {what}")

    def _open_channel(self, channel: int) -> Channel:
        ch = self._channels.get(channel)
        if ch is None:
            raise LocalProtocolError(f"channel {channel} is unknown, not open")
        if ch.state is not ChannelState.OPEN:  # OPEN takes SEND and stays OPEN: skip the table on the hot path
            ch.apply(ChannelInput.SEND)
        return ch

    def _known(self, channel: int, frame: fr.Frame) -> Channel:
        ch = self._channels.get(channel)
        if ch is None:
            raise RemoteProtocolError(f"{frame.TYPE.name} for unknown channel {channel}")
        return ch

    def _live(self, frame: Any) -> Channel | None:
        """The channel a frame is for, or None if we are closing it (the frame crossed our CLOSE)."""
        ch = self._known(frame.channel, frame)
        if ch.state is ChannelState.OPEN:  # the table's answer, without its lookup: the DATA hot path
            return ch
        return ch if ch.apply(ChannelInput.FRAME, frame.TYPE.name) else None


def _merge(out: list[ev.Event], parts: list[bytes]) -> None:
    """Replace the DataReceived that ``parts`` began with one carrying all of them."""
    if len(parts) > 1:
        last = out[-1]
        assert isinstance(last, ev.DataReceived)
        out[-1] = ev.DataReceived(last.channel, b"".join(parts))
    parts.clear()


_HANDLERS: dict[type[fr.Frame], Any] = {
    fr.Data: Connection._on_data,
    fr.WindowUpdate: Connection._on_window,
    fr.Open: Connection._on_open,
    fr.OpenOk: Connection._on_open_ok,
    fr.OpenFail: Connection._on_open_fail,
    fr.Close: Connection._on_close,
    fr.SetSettings: Connection._on_channel_frame,
    fr.Settings: Connection._on_channel_frame,
    fr.SetControl: Connection._on_channel_frame,
    fr.Control: Connection._on_channel_frame,
    fr.Modem: Connection._on_channel_frame,
    fr.PurgeRequest: Connection._on_channel_frame,
    fr.ChannelError: Connection._on_channel_frame,
    fr.Ping: Connection._on_ping,
    fr.Pong: Connection._on_pong,
    fr.GoAway: Connection._on_goaway,
    fr.Ports: Connection._on_ports,
    fr.Resume: Connection._on_resume,
    fr.Resumed: Connection._on_resumed,
    fr.ResumeFail: Connection._on_resume_fail,
    fr.DeviceStatus: Connection._on_device_status,
    fr.Flow: Connection._on_flow,
}
