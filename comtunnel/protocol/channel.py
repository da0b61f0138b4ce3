"""One channel's life as one table, the way h11 keeps its connection states: every input a channel
can take, from our side or the peer's, and the state it moves to. An input a state cannot take is a
protocol error, ours (:class:`LocalProtocolError`) or the peer's (:class:`RemoteProtocolError`),
so no transition is decided by an ``if`` somewhere else.

A client's channel starts OPENING (it sent OPEN); a hub's starts PENDING (it received one). CLOSED
means forgotten: the connection deletes the channel.
"""

from __future__ import annotations

import enum
from collections import deque

from . import frames as fr
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .flow import ReceiveWindow, ReplayBuffer, SendWindow

Operation = fr.SetSettings | fr.SetControl | fr.PurgeRequest


class ChannelState(enum.Enum):
    OPENING = "opening"  # client: OPEN sent, no answer yet
    PENDING = "pending"  # hub: OPEN received, not answered yet
    OPEN = "open"
    CLOSING = "closing"  # we sent CLOSE, waiting for the peer's
    RESUMING = "resuming"  # client: carried over from a dead connection, RESUMED not yet received
    CLOSED = "closed"  # forgotten


class ChannelInput(enum.Enum):
    # ours
    ACCEPT = "accept"  # hub: OPEN_OK sent
    REJECT = "reject"  # hub: OPEN_FAIL sent
    SEND = "send"  # DATA or a line operation sent
    CLOSE = "close"  # CLOSE sent
    SUSPEND = "suspend"  # client: the connection died; a resumption may carry the channel over
    # the peer's
    OPEN_OK = "OPEN_OK"
    OPEN_FAIL = "OPEN_FAIL"
    PEER_CLOSE = "CLOSE"
    FRAME = "frame"  # any other frame for the channel
    RESUMED = "RESUMED"  # the hub's RESUMED names the channel
    NOT_RESUMED = "not resumed"  # the hub's RESUMED leaves it out, or RESUME_FAIL


_LOCAL = {ChannelInput.ACCEPT, ChannelInput.REJECT, ChannelInput.SEND, ChannelInput.CLOSE, ChannelInput.SUSPEND}

S, In = ChannelState, ChannelInput
IGNORED = None  # the input crossed our CLOSE on the wire: the peer could not know, so it is dropped

_TABLE: dict[tuple[ChannelState, ChannelInput], ChannelState | None] = {
    (S.PENDING, In.ACCEPT): S.OPEN,
    (S.PENDING, In.REJECT): S.CLOSED,
    (S.PENDING, In.PEER_CLOSE): S.CLOSED,  # the client gave up before our answer
    (S.OPENING, In.OPEN_OK): S.OPEN,
    (S.OPENING, In.OPEN_FAIL): S.CLOSED,
    (S.OPENING, In.CLOSE): S.CLOSING,
    (S.OPENING, In.SUSPEND): S.CLOSED,  # never opened: reopened from scratch
    (S.OPEN, In.SEND): S.OPEN,
    (S.OPEN, In.FRAME): S.OPEN,
    (S.OPEN, In.CLOSE): S.CLOSING,
    (S.OPEN, In.PEER_CLOSE): S.CLOSED,  # answered with our CLOSE
    (S.OPEN, In.SUSPEND): S.RESUMING,
    (S.CLOSING, In.CLOSE): IGNORED,
    (S.CLOSING, In.OPEN_OK): IGNORED,
    (S.CLOSING, In.FRAME): IGNORED,
    (S.CLOSING, In.OPEN_FAIL): S.CLOSED,  # the answer to our CLOSE, as far as we are concerned
    (S.CLOSING, In.PEER_CLOSE): S.CLOSED,
    (S.CLOSING, In.SUSPEND): S.CLOSED,
    (S.RESUMING, In.SUSPEND): S.RESUMING,  # that resumption attempt died too
    (S.RESUMING, In.RESUMED): S.OPEN,
    (S.RESUMING, In.NOT_RESUMED): S.CLOSED,
}

_MESSAGES = {
    (S.PENDING, In.CLOSE): "answer a pending OPEN with reject_channel, not close",
    (S.RESUMING, In.CLOSE): "wait for the resumption's answer before closing",
    (S.OPENING, In.PEER_CLOSE): "CLOSE for channel {id} before OPEN_OK",
    (S.RESUMING, In.PEER_CLOSE): "CLOSE for channel {id} before RESUMED",
}
del S, In


class Channel:
    """A channel's state, its windows and what it keeps for a resumption."""

    __slots__ = (
        "close_code",
        "close_message",
        "held_credit",
        "id",
        "operations",
        "ops_received",
        "ops_sent",
        "port",
        "recv",
        "replay",
        "send",
        "state",
    )

    def __init__(self, channel_id: int, port: str, state: ChannelState, recv_window: int) -> None:
        self.id = channel_id
        self.port = port
        self.state = state
        self.recv = ReceiveWindow(recv_window)
        self.send = SendWindow(0)
        self.replay = ReplayBuffer()
        self.held_credit = 0  # credit returned while resuming: sent once RESUMED arrives
        self.ops_sent = 0  # sequence number of our next line operation
        self.ops_received = 0  # sequence number of the peer's next line operation
        self.operations: deque[Operation] = deque()  # ours, kept until a byte after them is acknowledged
        self.close_code: ErrorCode | int = ErrorCode.NORMAL
        self.close_message = ""

    def apply(self, what: ChannelInput, frame: str = "") -> bool:
        """Move to the state ``what`` leads to; False if the input is to be dropped.

        ``frame`` names the peer's frame in the error message.
        """
        key = (self.state, what)
        if key not in _TABLE:
            raise self._error(what, frame)
        following = _TABLE[key]
        if following is None:
            return False
        self.state = following
        return True

    def _error(self, what: ChannelInput, frame: str) -> LocalProtocolError | RemoteProtocolError:
        message = _MESSAGES.get((self.state, what))
        if what in _LOCAL:
            if message is None:
                wanted = "pending" if what in (ChannelInput.ACCEPT, ChannelInput.REJECT) else "open"
                message = f"channel {self.id} is {self.state.value}, not {wanted}"
            return LocalProtocolError(message)
        if message is None:
            if what is ChannelInput.RESUMED:
                message = "RESUMED names channel {id}, which we did not resume"
            else:
                message = f"{frame or what.value} for channel {{id}} in state {self.state.value}"
        return RemoteProtocolError(message.format(id=self.id))


def accepts(state: ChannelState, what: ChannelInput) -> bool:
    """Whether ``state`` takes ``what`` (possibly by dropping it); for callers that only may act."""
    return (state, what) in _TABLE
