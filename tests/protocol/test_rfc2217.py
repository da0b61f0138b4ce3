"""Telnet + RFC 2217 codec: real sessions as byte fixtures, exact encodings, and hostile input."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.protocol import rfc2217 as r
from comtunnel.protocol import telnet as t
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.protocol.settings import ModemLines, Parity, Purge, StopBits

TRACES = Path(__file__).parent / "traces"
_CHUNK = re.compile(r"^\s*[\d.]+\s+(C>S|S>C)\s+\d+\s+([0-9a-f]+)\s*$")


def chunks(name: str, direction: str) -> list[bytes]:
    out = []
    for line in (TRACES / f"{name}.trace").read_text().splitlines():
        m = _CHUNK.match(line)
        if m and m.group(1) == direction:
            out.append(bytes.fromhex(m.group(2)))
    return out


def feed(machine: r.Rfc2217Server | r.Rfc2217Client, parts: list[bytes]) -> list[object]:
    events: list[object] = []
    for part in parts:
        events += machine.receive_data(part)
    return events


def merged(events: list[object]) -> list[object]:
    """Join adjacent data events: how data is cut into events may depend on the chunking."""
    out: list[object] = []
    for e in events:
        if isinstance(e, r.SerialDataReceived) and out and isinstance(out[-1], r.SerialDataReceived):
            out[-1] = r.SerialDataReceived(out[-1].data + e.data)
        else:
            out.append(e)
    return out


# --- real sessions --------------------------------------------------------------------------------


def test_server_understands_pyserials_session() -> None:
    events = feed(r.Rfc2217Server(), chunks("pyserial_client_ignsetcontrol__ser2net_pty", "C>S"))
    assert r.BaudRateRequested(9600) in events
    assert r.BaudRateRequested(115200) in events
    assert r.DataSizeRequested(7) in events
    assert r.ParityRequested(Parity.EVEN) in events
    assert r.StopSizeRequested(StopBits.TWO) in events
    assert r.ComControlRequested(r.DTR_ON) in events and r.ComControlRequested(r.RTS_ON) in events
    assert r.ComPurgeRequested(Purge.RECEIVE) in events
    assert not any(isinstance(e, r.ProtocolWarning) for e in events)


def test_server_understands_hub4coms_burst_before_our_do() -> None:
    server = r.Rfc2217Server()
    server.start()
    server.data_to_send()
    events = feed(server, chunks("hub4com_replay__ser2net_pty", "C>S"))
    assert events[:8] == [
        r.BaudRateRequested(9600),
        r.DataSizeRequested(8),
        r.ParityRequested(Parity.NONE),
        r.StopSizeRequested(StopBits.ONE),
        r.ComControlRequested(r.DTR_OFF),
        r.ComControlRequested(r.RTS_OFF),
        r.ComControlRequested(r.BREAK_OFF),
        r.FlowSuspended(True),
    ]
    data = b"".join(e.data for e in events if isinstance(e, r.SerialDataReceived))
    assert b"\xff\xf0" in data and b"\xff\xfa\x2c\x01" in data and b"\xff\xff\xff" in data
    assert b"\r\x00" in data and b"\r\n" in data and b"\x11" in data and b"\x13" in data


def test_client_understands_ser2nets_answers() -> None:
    client = r.Rfc2217Client()
    client.start()
    client.set_baudrate(9600)
    client.set_control(r.DTR_ON)
    events = feed(client, chunks("pyserial_client_ignsetcontrol__ser2net_pty", "S>C"))
    assert r.ModemStateNotified(ModemLines.NONE, 0) in events
    assert r.BaudRateAcked(9600) in events and r.BaudRateAcked(115200) in events
    assert r.ParityAcked(Parity.EVEN) in events and r.StopSizeAcked(StopBits.TWO) in events
    assert r.PurgeAcked(1) in events
    assert "baudrate" not in client.pending()
    assert client.telnet.remote_enabled(t.BINARY)


def test_client_understands_ser2net_probe_and_quirks() -> None:
    events = feed(r.Rfc2217Client(), chunks("rfc2217_probe__ser2net_pty", "S>C"))
    assert r.SignatureReceived("ser2net") in events
    assert r.ControlAcked("dtr", r.DTR_REQUEST) in events  # ser2net echoes the query code


def test_client_reads_pyserial_servers_modem_notifications() -> None:
    events = feed(r.Rfc2217Client(), chunks("pyserial_client__pyserial_server_loop", "S>C"))
    modem = [e for e in events if isinstance(e, r.ModemStateNotified)]
    assert modem[0] == r.ModemStateNotified(ModemLines(0xB0), 0x0B)


@pytest.mark.parametrize("name", [p.stem for p in TRACES.glob("*.trace")])
@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_any_split_gives_the_same_events(name: str, data: st.DataObject) -> None:
    for direction, machine in (("C>S", r.Rfc2217Server), ("S>C", r.Rfc2217Client)):
        stream = b"".join(chunks(name, direction))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
        parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert merged(feed(machine(), parts)) == merged(feed(machine(), [stream]))


def test_byte_by_byte_equals_whole() -> None:
    stream = b"".join(chunks("hub4com_replay__ser2net_pty", "C>S"))
    whole = merged(feed(r.Rfc2217Server(), [stream]))
    single = merged(feed(r.Rfc2217Server(), [stream[i : i + 1] for i in range(len(stream))]))
    assert single == whole


# --- exact encodings ------------------------------------------------------------------------------


def test_encodings_match_the_rfc() -> None:
    c = r.Rfc2217Client()
    c.set_baudrate(9600)
    assert c.data_to_send() == bytes.fromhex("fffa2c0100002580fff0")
    c.set_baudrate(255)
    assert c.data_to_send() == bytes.fromhex("fffa2c01000000fffffff0")
    c.set_modemstate_mask(255)
    assert c.data_to_send() == bytes.fromhex("fffa2c0bfffffff0")
    c.set_stopsize(StopBits.ONE_POINT_FIVE)
    assert c.data_to_send() == bytes.fromhex("fffa2c0403fff0")
    s = r.Rfc2217Server()
    s.ack_baudrate(115200)
    s.ack_control(r.DTR_ON)
    s.ack_purge(Purge.TRANSMIT)
    assert s.data_to_send() == bytes.fromhex("fffa2c650001c200fff0fffa2c6908fff0fffa2c7002fff0")


def test_server_notifies_modem_state_through_the_mask_with_deltas() -> None:
    s = r.Rfc2217Server()
    assert s.notify_modem_state(ModemLines.NONE, force=True)
    assert s.data_to_send() == bytes.fromhex("fffa2c6b00fff0")
    assert s.notify_modem_state(ModemLines.CTS | ModemLines.DSR)
    assert s.data_to_send() == bytes.fromhex("fffa2c6b33fff0")  # CTS, DSR and both delta bits
    s.receive_data(bytes.fromhex("fffa2c0b00fff0"))  # mask 0 silences notifications
    assert not s.notify_modem_state(ModemLines.NONE)


# --- round trips and negotiation ---------------------------------------------------------------------


def connected() -> tuple[r.Rfc2217Server, r.Rfc2217Client, int]:
    server, client = r.Rfc2217Server(), r.Rfc2217Client()
    server.start()
    client.start()
    for rounds in range(1, 20):
        a, b = server.data_to_send(), client.data_to_send()
        if not a and not b:
            return server, client, rounds
        client.receive_data(a)
        server.receive_data(b)
    raise AssertionError("negotiation loops")


def test_negotiation_converges_with_binary_both_ways() -> None:
    server, client, rounds = connected()
    assert rounds <= 4
    for side in (server.telnet, client.telnet):
        assert side.local_enabled(t.BINARY) and side.remote_enabled(t.BINARY)
    assert server.telnet.remote_enabled(t.COM_PORT_OPTION)


HOSTILE = b"\xff\xf0 \xff\xfa\x2c\x01 \xff\xff\xff \r\x00 \r\n \x11\x13 \xff"


@given(st.binary(max_size=5000) | st.just(HOSTILE))
@settings(max_examples=150)
def test_data_round_trips_byte_identical(payload: bytes) -> None:
    server, client, _ = connected()
    client.send_data(payload)
    got = b"".join(e.data for e in server.receive_data(client.data_to_send()) if isinstance(e, r.SerialDataReceived))
    assert got == payload
    server.send_data(payload)
    got = b"".join(e.data for e in client.receive_data(server.data_to_send()) if isinstance(e, r.SerialDataReceived))
    assert got == payload


def test_nvt_mode_pads_lone_cr_when_binary_is_refused() -> None:
    a = t.TelnetConnection(local=set(), remote=set())
    a.send_data(b"a\rb\r\nc")
    assert a.data_to_send() == b"a\r\x00b\r\nc"
    assert a.receive_data(b"x\r") + a.receive_data(b"\x00y") == [t.TelnetData(b"x\r"), t.TelnetData(b"y")]


# --- hostile input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "warning"),
    [
        ("fffa2c010025fff0", "SET-BAUDRATE with 2"),
        ("fffa2c0100002580aafff0", "SET-BAUDRATE with 5"),
        ("fffa2c02fff0", "0 value bytes"),
        ("fffa2c0309fff0", "SET-PARITY 9"),
        ("fffa2c0563fff0", "SET-CONTROL 99"),
        ("fffa2c6500002580fff0", "unexpected COM-PORT-OPTION command 101"),
    ],
)
def test_malformed_commands_are_warnings_not_crashes(wire: str, warning: str) -> None:
    events = r.Rfc2217Server().receive_data(bytes.fromhex(wire))
    assert len(events) == 1 and isinstance(events[0], r.ProtocolWarning) and warning in events[0].message


def test_overlong_subnegotiation_is_our_error_and_memory_is_bounded() -> None:
    server = r.Rfc2217Server()
    server.receive_data(b"\xff\xfa\x2c")
    with pytest.raises(RemoteProtocolError):
        for _ in range(100):
            server.receive_data(b"\x01" * 100)
    assert len(server.telnet._sb) <= t.MAX_SUBNEGOTIATION + 100


def test_refused_options_are_answered_once_without_loops() -> None:
    server = r.Rfc2217Server()
    server.receive_data(bytes((t.IAC, t.DO, t.ECHO, t.IAC, t.WILL, 24)))
    assert server.data_to_send() == bytes((t.IAC, t.WONT, t.ECHO, t.IAC, t.DONT, 24))
    server.receive_data(bytes((t.IAC, t.WONT, t.ECHO)))  # already off: no answer
    assert server.data_to_send() == b""


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_garbage_gives_events_or_our_error_only(garbage: bytes) -> None:
    for machine in (r.Rfc2217Server(), r.Rfc2217Client()):
        with contextlib.suppress(RemoteProtocolError):
            machine.receive_data(garbage)
        assert len(machine.telnet._sb) <= t.MAX_SUBNEGOTIATION + 1
