"""The channel state table: every state and input either has a transition or raises the right error."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from muxpair import open_channel, pair, pump

from comtunnel.protocol import frames as fr
from comtunnel.protocol import resume
from comtunnel.protocol.channel import Channel, ChannelInput, ChannelState, accepts
from comtunnel.protocol.codec import FrameDecoder
from comtunnel.protocol.errors import LocalProtocolError, RemoteProtocolError
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import PortSettings

LOCAL = {ChannelInput.ACCEPT, ChannelInput.REJECT, ChannelInput.SEND, ChannelInput.CLOSE, ChannelInput.SUSPEND}
S, In = ChannelState, ChannelInput

EXPECTED = {  # the table as the wire format describes it, written out again
    S.OPENING: {In.OPEN_OK: S.OPEN, In.OPEN_FAIL: S.CLOSED, In.CLOSE: S.CLOSING, In.SUSPEND: S.CLOSED},
    S.PENDING: {In.ACCEPT: S.OPEN, In.REJECT: S.CLOSED, In.PEER_CLOSE: S.CLOSED},
    S.OPEN: {In.SEND: S.OPEN, In.FRAME: S.OPEN, In.CLOSE: S.CLOSING, In.PEER_CLOSE: S.CLOSED, In.SUSPEND: S.RESUMING},
    S.CLOSING: {
        In.CLOSE: None,
        In.OPEN_OK: None,
        In.FRAME: None,
        In.OPEN_FAIL: S.CLOSED,
        In.PEER_CLOSE: S.CLOSED,
        In.SUSPEND: S.CLOSED,
    },
    S.RESUMING: {In.SUSPEND: S.RESUMING, In.RESUMED: S.OPEN, In.NOT_RESUMED: S.CLOSED},
    S.CLOSED: {},
}


def channel(state: ChannelState) -> Channel:
    return Channel(7, "ttyUSB0", state, 4096)


@pytest.mark.parametrize(("state", "what"), list(itertools.product(ChannelState, ChannelInput)))
def test_every_state_and_input(state: ChannelState, what: ChannelInput) -> None:
    ch = channel(state)
    allowed = EXPECTED[state]
    if what in allowed:
        following = allowed[what]
        assert accepts(state, what)
        assert ch.apply(what) is (following is not None)
        assert ch.state is (following or state)
        return
    assert not accepts(state, what)
    error = LocalProtocolError if what in LOCAL else RemoteProtocolError
    with pytest.raises(error) as info:
        ch.apply(what, "DATA")
    assert ch.state is state  # a refused input changes nothing
    message = str(info.value)
    assert "7" in message or "pending OPEN" in message or "resumption" in message


def test_peer_errors_name_the_frame_and_the_state() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^SET_CONTROL for channel 7 in state pending$"):
        channel(S.PENDING).apply(In.FRAME, "SET_CONTROL")
    with pytest.raises(RemoteProtocolError, match="before OPEN_OK"):
        channel(S.OPENING).apply(In.PEER_CLOSE)
    with pytest.raises(LocalProtocolError, match="channel 7 is closing, not open"):
        channel(S.CLOSING).apply(In.SEND)
    with pytest.raises(LocalProtocolError, match="channel 7 is open, not pending"):
        channel(S.OPEN).apply(In.ACCEPT)


@given(st.sampled_from([S.OPENING, S.PENDING]), st.lists(st.sampled_from(list(ChannelInput)), max_size=30))
def test_any_sequence_follows_the_table(start: ChannelState, inputs: list[ChannelInput]) -> None:
    ch = channel(start)
    for what in inputs:
        before = ch.state
        try:
            ch.apply(what)
        except (LocalProtocolError, RemoteProtocolError):
            assert what not in EXPECTED[before]
            assert ch.state is before
            continue
        assert ch.state is (EXPECTED[before][what] or before)
    if ch.state is S.CLOSED:  # forgotten for good
        assert not any(accepts(S.CLOSED, what) for what in ChannelInput)


def test_a_channel_cannot_be_closed_while_its_resumption_is_unanswered() -> None:
    client, hub = Connection(Role.CLIENT), Connection(Role.HUB, session_token="s1")
    pump(client, hub)
    cid = open_channel(client, hub)
    client.send_data(cid, b"abc")
    pump(client, hub)
    resumed = Connection(Role.CLIENT, resume_from=client)
    assert resumed.channel_state(cid) is S.RESUMING
    with pytest.raises(LocalProtocolError, match="resumption"):
        resumed.close_channel(cid)
    assert resumed.channel_state(cid) is S.RESUMING


def test_a_refused_claim_leaves_the_old_session_as_it_was() -> None:
    client, hub = pair()
    first, second = open_channel(client, hub), open_channel(client, hub)
    hub.send_data(first, b"x" * 10)
    hub.send_data(second, b"y" * 10)
    pump(client, hub)
    old = {first: hub._channels[first], second: hub._channels[second]}
    before = {cid: (ch.state, ch.send.sent, ch.send.acked, len(ch.replay)) for cid, ch in old.items()}
    out: list[bytes] = []
    with pytest.raises(RemoteProtocolError, match="claims 11 bytes, we sent 10"):
        resume.accept(old.values(), [(first, 10, 10), (second, 11, 10)], out)
    assert out == []
    assert {cid: (ch.state, ch.send.sent, ch.send.acked, len(ch.replay)) for cid, ch in old.items()} == before


def test_resumption_replays_bytes_and_operations_in_their_places() -> None:
    client, hub = pair()
    cid = open_channel(client, hub)
    client.send_data(cid, b"ab")
    client.request_settings(cid, PortSettings(baudrate=9600))
    client.send_data(cid, b"cd")
    client.data_to_send()  # lost with the connection: the hub never saw any of it
    ch = client._channels[cid]
    out: list[bytes] = []
    resume.replay(ch, out)
    # the bytes before the operation, the operation at offset 2, then the rest: as the application made them
    frames = FrameDecoder().feed(b"".join(out))
    assert [type(f) for f in frames] == [fr.Data, fr.SetSettings, fr.Data]
    assert isinstance(frames[1], fr.SetSettings) and frames[1].offset == 2
    assert [f.data for f in frames if isinstance(f, fr.Data)] == [b"ab", b"cd"]
