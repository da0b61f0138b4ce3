"""The serial-line vocabulary: a PortSettings that exists is valid, and the wire map round-trips.

These values cross the tunnel in OPEN / SET_SETTINGS / SETTINGS, so the checks here are what keep a
peer's nonsense (bits=9, baud=0, parity "x", floats and bools where ints belong) out of the port code.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comtunnel.protocol.settings import (
    MAX_BAUDRATE,
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    Purge,
    SettingsError,
    StopBits,
    parse_line_settings,
)

settings_st = st.builds(
    PortSettings,
    baudrate=st.integers(1, MAX_BAUDRATE),
    bytesize=st.sampled_from([5, 6, 7, 8]),
    parity=st.sampled_from(list(Parity)),
    stopbits=st.sampled_from(list(StopBits)),
    xonxoff=st.booleans(),
    rtscts=st.booleans(),
)
opt_bool = st.none() | st.booleans()


@given(settings_st)
def test_wire_map_round_trip(settings: PortSettings) -> None:
    wire = settings.to_wire()
    assert set(wire) == {"baud", "bits", "parity", "stop", "xonxoff", "rtscts"}
    assert PortSettings.from_wire(wire) == settings
    assert type(PortSettings.from_wire(wire).parity) is Parity


@given(settings_st)
def test_short_form_round_trip(settings: PortSettings) -> None:
    assert parse_line_settings(settings.short()) == settings


def test_defaults_are_9600_8n1_without_flow_control() -> None:
    assert PortSettings().short() == "9600,8N1"
    assert PortSettings(115200, rtscts=True, xonxoff=True).short() == "115200,8N1,rtscts,xonxoff"


def test_enum_values_are_accepted_as_strings() -> None:
    s = PortSettings(parity="E", stopbits="1.5")  # type: ignore[arg-type]
    assert s.parity is Parity.EVEN and s.stopbits is StopBits.ONE_POINT_FIVE
    assert StopBits.ONE_POINT_FIVE.as_float == 1.5


@pytest.mark.parametrize(
    "changes",
    [
        {"baudrate": 0},
        {"baudrate": MAX_BAUDRATE + 1},
        {"baudrate": -9600},
        {"baudrate": 9600.0},
        {"baudrate": True},
        {"baudrate": "9600"},
        {"bytesize": 4},
        {"bytesize": 9},
        {"bytesize": 8.0},
        {"bytesize": True},
        {"bytesize": "8"},
        {"parity": "X"},
        {"parity": "n"},
        {"parity": None},
        {"stopbits": "3"},
        {"stopbits": None},
        {"xonxoff": 1},
        {"rtscts": "yes"},
    ],
)
def test_invalid_values_raise_settings_error(changes: dict[str, Any]) -> None:
    with pytest.raises(SettingsError):
        PortSettings(**changes)
    with pytest.raises(SettingsError):
        PortSettings().replace(**changes)


def test_settings_error_messages_name_the_problem() -> None:
    with pytest.raises(SettingsError, match="baud rate 0 is out of range"):
        PortSettings(0)
    with pytest.raises(SettingsError, match="parity must be one of N, E, O, M, S"):
        PortSettings(parity="Q")  # type: ignore[arg-type]


@pytest.mark.parametrize("missing", ["baud", "bits", "parity", "stop", "xonxoff", "rtscts"])
def test_from_wire_requires_every_key(missing: str) -> None:
    wire = PortSettings().to_wire()
    del wire[missing]
    with pytest.raises(SettingsError, match="incomplete settings"):
        PortSettings.from_wire(wire)


def test_from_wire_ignores_unknown_keys() -> None:
    assert PortSettings.from_wire({**PortSettings(300).to_wire(), "future": 1}) == PortSettings(300)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4800", PortSettings(4800)),
        ("4800,7E1", PortSettings(4800, 7, Parity.EVEN, StopBits.ONE)),
        ("7e2", PortSettings(9600, 7, Parity.EVEN, StopBits.TWO)),
        (" 250000 , 8N1.5 , RTSCTS ", PortSettings(250000, stopbits=StopBits.ONE_POINT_FIVE, rtscts=True)),
        ("115200,8N1,xonxoff", PortSettings(115200, xonxoff=True)),
        ("1234567,5S2", PortSettings(1234567, 5, Parity.SPACE, StopBits.TWO)),
        ("", PortSettings()),
    ],
)
def test_parse_line_settings(text: str, expected: PortSettings) -> None:
    assert parse_line_settings(text) == expected


def test_parse_line_settings_keeps_the_base() -> None:
    base = PortSettings(57600, 7, Parity.ODD, rtscts=True)
    assert parse_line_settings("8N1", base) == PortSettings(57600, 8, Parity.NONE, rtscts=True)


@pytest.mark.parametrize("text", ["fast", "9600,9N1", "0", "9600,8X1", "9600,8N3", "-5", "9600;8N1", "8N1x"])
def test_parse_line_settings_rejects(text: str) -> None:
    with pytest.raises(SettingsError):
        parse_line_settings(text)


def test_parse_error_message_says_what_was_expected() -> None:
    with pytest.raises(SettingsError, match=r"cannot read 'fast' in '9600,fast'.*8N1"):
        parse_line_settings("9600,fast")


@given(opt_bool, opt_bool, opt_bool, st.booleans(), st.booleans(), st.booleans())
def test_control_request_applies_only_the_lines_it_names(
    dtr: bool | None, rts: bool | None, brk: bool | None, s_dtr: bool, s_rts: bool, s_brk: bool
) -> None:
    request = ControlRequest(dtr, rts, brk)
    new = request.apply_to(ControlState(s_dtr, s_rts, s_brk))
    assert new == ControlState(
        s_dtr if dtr is None else dtr, s_rts if rts is None else rts, s_brk if brk is None else brk
    )
    wire = request.to_wire()
    assert wire == {k: v for k, v in (("dtr", dtr), ("rts", rts), ("break", brk)) if v is not None}


def test_control_state_wire_map_is_complete() -> None:
    assert ControlState(dtr=True).to_wire() == {"dtr": True, "rts": False, "break": False}


def test_modem_lines_use_rfc2217_bits() -> None:
    assert (ModemLines.CTS, ModemLines.DSR, ModemLines.RI, ModemLines.CD) == (0x10, 0x20, 0x40, 0x80)
    assert (ModemLines.CTS | ModemLines.CD).describe() == "CTS=on DSR=off RI=off CD=on"
    assert ModemLines.NONE.describe() == "CTS=off DSR=off RI=off CD=off"


def test_purge_both_is_receive_and_transmit() -> None:
    assert Purge.RECEIVE | Purge.TRANSMIT == Purge.BOTH
    assert int(Purge.BOTH) == 3
