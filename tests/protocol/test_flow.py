"""Credit windows: the window objects alone, then through two Connections wired back to back.

The rules under test (SSH RFC 4254 section 5.2, HTTP/2 RFC 9113 section 5.2): a sender never has more
than a window in flight; credit comes back only after the receiver's consumer took the bytes, in
steps of at least half a window; a stalled consumer stops only its own channel, after one window.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from muxpair import open_channel, pair, pump

from comtunnel.protocol import events as ev
from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import FrameDecoder, encode_frame
from comtunnel.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from comtunnel.protocol.flow import ReceiveWindow, SendWindow
from comtunnel.protocol.limits import MAX_WINDOW

# --- the window objects -------------------------------------------------------------------------


def test_send_window_consumes_up_to_its_credit() -> None:
    window = SendWindow(100)
    window.consume(60)
    window.consume(40)
    assert window.available == 0
    with pytest.raises(LocalProtocolError) as info:
        window.consume(1)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    assert window.available == 0  # a refused send takes nothing


def test_send_window_grows_within_bounds() -> None:
    window = SendWindow(10)
    window.grow(5)
    assert window.available == 15
    for bad in (0, -1):
        with pytest.raises(RemoteProtocolError) as info:
            window.grow(bad)
        assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    window.grow(MAX_WINDOW - 15)
    assert window.available == MAX_WINDOW
    with pytest.raises(RemoteProtocolError):
        window.grow(1)
    assert window.available == MAX_WINDOW


def test_receive_window_refuses_more_than_granted() -> None:
    window = ReceiveWindow(100)
    window.received(100)
    with pytest.raises(RemoteProtocolError) as info:
        window.received(1)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    assert "1 bytes with 0 of window left" in str(info.value)


def test_receive_window_returns_credit_at_half() -> None:
    window = ReceiveWindow(100)
    window.received(100)
    assert window.consumed(49) == 0
    assert window.remaining == 0
    assert window.consumed(1) == 50  # exactly half: return it all
    assert window.remaining == 50
    assert window.consumed(50) == 50
    assert window.remaining == 100


def test_receive_window_refuses_consuming_what_never_came() -> None:
    window = ReceiveWindow(100)
    window.received(10)
    with pytest.raises(LocalProtocolError):
        window.consumed(11)
    with pytest.raises(LocalProtocolError):
        window.consumed(-1)
    assert window.consumed(10) == 0  # the failed calls changed nothing


@given(st.integers(2, 5000), st.lists(st.tuples(st.booleans(), st.integers(0, 5000)), max_size=60))
@settings(max_examples=200)
def test_receive_window_accounting(size: int, steps: list[tuple[bool, int]]) -> None:
    """remaining + held by the consumer + unreturned == size, and every increment is >= half."""
    window = ReceiveWindow(size)
    held = 0
    unreturned = 0
    for receive, amount in steps:
        if receive:
            amount = min(amount, window.remaining)
            window.received(amount)
            held += amount
        else:
            amount = min(amount, held)
            increment = window.consumed(amount)
            held -= amount
            unreturned += amount - increment
            if increment:
                assert increment * 2 >= size
                unreturned = 0
        assert window.remaining + held + unreturned == size
        assert unreturned * 2 < size
    window.consumed(held)
    assert (size - window.remaining) * 2 < size  # once the consumer took everything, under half is withheld


# --- through two connections ------------------------------------------------------------------------


def received(events: list[ev.Event], channel: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.DataReceived) and e.channel == channel)


def test_each_direction_is_bounded_by_its_receivers_window() -> None:
    client, hub = pair(window=700, hub_window=300)
    cid = open_channel(client, hub)
    assert client.send_window(cid) == 300  # the hub grants 300 in OPEN_OK
    assert hub.send_window(cid) == 700  # the client granted 700 in OPEN


def test_sender_cannot_exceed_the_window() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    for _ in range(10):
        client.send_data(cid, b"0123456789" * 10)
    assert client.send_window(cid) == 0
    queued = client.data_to_send()
    with pytest.raises(LocalProtocolError) as info:
        client.send_data(cid, b"!")
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    assert client.data_to_send() == b""  # the refused write queued nothing
    events = hub.receive_data(queued)
    assert len(received(events, cid)) == 1000


def test_a_write_larger_than_the_window_is_refused_whole() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    with pytest.raises(LocalProtocolError):
        client.send_data(cid, b"x" * 1001)
    assert client.send_window(cid) == 1000
    assert client.data_to_send() == b""


def test_window_update_is_sent_once_half_is_consumed() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    client.send_data(cid, bytes(800))
    _, h = pump(client, hub)
    assert len(received(h, cid)) == 800
    hub.consume(cid, 300)
    assert hub.data_to_send() == b""  # 300 < 500: nothing yet
    hub.consume(cid, 199)
    assert hub.data_to_send() == b""
    hub.consume(cid, 1)
    assert FrameDecoder().feed(hub.data_to_send()) == [fr.WindowUpdate(cid, 500)]
    hub.consume(cid, 300)
    assert hub.data_to_send() == b""  # 300 unreturned, below half again


def test_window_opened_event_reports_the_new_credit() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    client.send_data(cid, bytes(1000))
    pump(client, hub)
    hub.consume(cid, 600)
    c, _ = pump(client, hub)
    assert c == [ev.WindowOpened(cid, 600)]
    assert client.send_window(cid) == 600


def test_a_receiver_that_never_consumes_stops_its_sender_after_exactly_one_window() -> None:
    client, hub = pair(hub_window=1000)
    stalled = open_channel(client, hub, "stalled")
    flowing = open_channel(client, hub, "flowing")
    got_stalled = b""
    got_flowing = b""
    sent_flowing = b""
    for round_no in range(30):
        if client.send_window(stalled):
            client.send_data(stalled, bytes([round_no]) * min(client.send_window(stalled), 333))
        chunk = bytes([round_no]) * client.send_window(flowing)
        client.send_data(flowing, chunk)
        sent_flowing += chunk
        _, h = pump(client, hub)
        got_stalled += received(h, stalled)
        data = received(h, flowing)
        got_flowing += data
        hub.consume(flowing, len(data))
        pump(client, hub)
    assert len(got_stalled) == 1000  # one window, then nothing
    assert client.send_window(stalled) == 0
    assert got_flowing == sent_flowing
    assert len(got_flowing) > 20 * 1000  # the other channel kept going


def test_the_hub_side_is_bounded_by_the_clients_window_too() -> None:
    client, hub = pair(window=512, hub_window=1000)
    cid = open_channel(client, hub)
    hub.send_data(cid, bytes(512))
    with pytest.raises(LocalProtocolError):
        hub.send_data(cid, b"x")
    c, _ = pump(client, hub)
    assert len(received(c, cid)) == 512
    client.consume(cid, 512)
    _, h = pump(client, hub)
    assert h == [ev.WindowOpened(cid, 512)]


def test_peer_exceeding_the_window_is_a_flow_control_error() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    assert hub.receive_data(encode_frame(fr.Data(cid, bytes(990)))) == [ev.DataReceived(cid, bytes(990))]
    with pytest.raises(RemoteProtocolError) as info:
        hub.receive_data(encode_frame(fr.Data(cid, bytes(11))))
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    goaway = FrameDecoder().feed(hub.data_to_send())[-1]
    assert isinstance(goaway, fr.GoAway) and goaway.code == ErrorCode.FLOW_CONTROL_ERROR
    assert hub.closed
    assert hub.receive_data(encode_frame(fr.Ping(1))) == []  # a dead connection ignores the rest


@pytest.mark.parametrize(
    ("increment", "why"),
    [(0, "zero increment"), (MAX_WINDOW, "window grows past 2^30")],
)
def test_invalid_window_updates_are_flow_control_errors(increment: int, why: str) -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(encode_frame(fr.WindowUpdate(cid, increment)))
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR, why


def test_unsolicited_credit_is_allowed_up_to_the_maximum() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    assert client.receive_data(encode_frame(fr.WindowUpdate(cid, 5000))) == [ev.WindowOpened(cid, 6000)]
    client.send_data(cid, bytes(6000))


def test_credit_for_a_closed_channel_is_not_sent() -> None:
    client, hub = pair(1000)
    cid = open_channel(client, hub)
    client.send_data(cid, bytes(900))
    pump(client, hub)
    hub.close_channel(cid)
    hub.consume(cid, 900)
    assert [type(f) for f in FrameDecoder().feed(hub.data_to_send())] == [fr.Close]
