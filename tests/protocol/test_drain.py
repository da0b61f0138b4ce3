"""The window a channel grants follows what its port really drains (a fake clock, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import encode_frame
from comtunnel.protocol.drain import MIN_WINDOW, START_WINDOW, DrainMeter
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.protocol.flow import ReceiveWindow, SendWindow
from comtunnel.protocol.limits import DEFAULT_WINDOW
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import PortSettings


def test_a_port_that_keeps_up_earns_the_full_window() -> None:
    meter = DrainMeter()
    assert meter.window() == START_WINDOW
    now = 0.0
    for _ in range(200):  # 16 KiB writes the port takes at once
        meter.wrote(16384, 0, now)
        now += 0.001
    assert meter.window() == DEFAULT_WINDOW


def test_a_9600_baud_line_gets_the_minimum_and_a_stopped_one_too() -> None:
    meter = DrainMeter()
    meter.wrote(16384, 12288, 0.0)  # the tty took 4 KiB, the rest waits
    meter.sample(12288 - 240, 0.25)  # 960 B/s
    assert meter.window() == MIN_WINDOW
    meter.drained(13.0)
    assert meter.window() == MIN_WINDOW
    fast = DrainMeter()
    fast.stopped = True  # XOFF
    assert fast.window() == MIN_WINDOW


def test_115200_baud_gets_a_few_hundred_milliseconds_of_it() -> None:
    meter = DrainMeter()
    meter.wrote(65536, 60000, 0.0)
    meter.sample(60000 - 11520, 1.0)  # 11.5 KB/s
    assert 4096 <= meter.window() <= 0.5 * 11520
    meter.reset()  # the application chose another baud rate: measure afresh
    assert meter.window() == START_WINDOW


def test_a_line_that_got_faster_grows_back() -> None:
    meter = DrainMeter()
    meter.wrote(8192, 4096, 0.0)
    meter.drained(4.0)  # 2 KB/s
    assert meter.window() == MIN_WINDOW
    now = 5.0
    for _ in range(300):
        meter.wrote(4096, 0, now)
        now += 0.01
    assert meter.window() == DEFAULT_WINDOW


def test_a_moment_of_buffering_says_nothing_about_the_rate() -> None:
    meter = DrainMeter()
    for i in range(100):
        meter.wrote(16384, 8192, i * 0.01)
        meter.drained(i * 0.01 + 0.005)
    assert meter.window() == DEFAULT_WINDOW


def test_shrinking_keeps_what_was_granted_and_stops_the_sender() -> None:
    recv, send = ReceiveWindow(1000), SendWindow(1000)
    send.consume(900)
    recv.received(900)
    recv.resize(100)
    send.resize(100)
    assert send.available == 0  # 900 in flight, 100 granted from now on
    recv.received(100)  # sent before the resize arrived: still within what was granted
    assert recv.remaining == 0


@given(
    st.lists(st.tuples(st.sampled_from(["send", "consume", "resize", "deliver"]), st.integers(1, 5000)), max_size=80)
)
def test_a_sender_within_its_window_never_breaks_the_receivers_grant(steps: list[tuple[str, int]]) -> None:
    """Resizes, sends and consumption in any order, the receiver's WINDOW frames reaching the sender
    any time later but in order (one connection): the receiver never sees more than it granted,
    and credit stays exact. A WINDOW with a size carries the credit owed at that moment, as
    ``Connection.resize_window`` sends it; the sender applies the size, then the increment."""
    recv, send = ReceiveWindow(4096), SendWindow(4096)
    wire: list[tuple[int, int | None]] = []  # (increment, size) frames the sender has not read yet
    for action, n in steps:
        if action == "send":
            size = min(n, send.available)
            send.consume(size)
            recv.received(size)  # raises if beyond the grant
        elif action == "consume":
            increment = recv.consumed(min(n, recv.received_total - recv.consumed_total))
            if increment:
                wire.append((increment, None))
        elif action == "resize":
            recv.resize(n)
            wire.append((recv.report_all(), n))
        elif wire:
            increment, new_size = wire.pop(0)
            if new_size is not None:
                send.resize(new_size)
            if increment or new_size is None:
                send.grow(increment)
    assert send.acked <= recv.consumed_total <= recv.received_total == send.sent


def test_window_frames_with_a_size_resize_the_peers_window() -> None:
    client, hub = Connection(Role.CLIENT), Connection(Role.HUB)
    hub.receive_data(client.data_to_send())
    client.receive_data(hub.data_to_send())
    cid = client.open_channel("p", PortSettings())
    hub.receive_data(client.data_to_send())
    hub.accept_channel(cid, PortSettings())
    client.receive_data(hub.data_to_send())
    assert client.send_window(cid) == DEFAULT_WINDOW
    hub.resize_window(cid, 4096)
    client.receive_data(hub.data_to_send())
    assert client.send_window(cid) == 4096 and hub.window_size(cid) == 4096
    try:
        hub.receive_data(encode_frame(fr.WindowUpdate(cid, 0, 0)))
    except RemoteProtocolError:
        pass
    else:
        raise AssertionError("WINDOW of size 0 from the client must not pass")  # hub-side check
