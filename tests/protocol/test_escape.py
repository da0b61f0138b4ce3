"""The console's escape parser: byte fixtures, and the same items however the input is split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comtunnel.protocol.escape import (
    MAX_LINE,
    Command,
    Data,
    Echo,
    EscapeParser,
    Item,
    SetSettings,
    Unknown,
)

ESC = b"\x1d"


def parse(*chunks: bytes) -> list[Item]:
    """Feed ``chunks`` one by one; join adjacent Data and Echo items across feeds."""
    parser = EscapeParser()
    out: list[Item] = []
    for chunk in chunks:
        for item in parser.feed(chunk):
            last = out[-1] if out else None
            if isinstance(item, Data) and isinstance(last, Data):
                out[-1] = Data(last.data + item.data)
            elif isinstance(item, Echo) and isinstance(last, Echo):
                out[-1] = Echo(last.text + item.text)
            else:
                out.append(item)
    return out


@pytest.mark.parametrize(
    ("typed", "items"),
    [
        (b"", []),
        (b"AT\r\n", [Data(b"AT\r\n")]),
        (b"\x03\x04\x1b[A\x00\xff", [Data(b"\x03\x04\x1b[A\x00\xff")]),  # Ctrl-C, Ctrl-D: just bytes
        (b"ab" + ESC + b"qcd", [Data(b"ab"), Command.QUIT]),  # nothing after quit
        (ESC + ESC, [Data(ESC)]),
        (b"a" + ESC + ESC + b"b", [Data(b"a\x1db")]),
        (ESC + b"b" + ESC + b"d" + ESC + b"r", [Command.BREAK, Command.TOGGLE_DTR, Command.TOGGLE_RTS]),
        (b"x" + ESC + b"dy", [Data(b"x"), Command.TOGGLE_DTR, Data(b"y")]),
        (ESC + b"s" + ESC + b"?" + ESC + b"h", [Command.SHOW_STATE, Command.HELP, Command.HELP]),
        (ESC + b"z1", [Unknown(ord("z")), Data(b"1")]),
        (ESC + b"B9600,7E1\r", [Command.SETTINGS_PROMPT, Echo("9600,7E1"), SetSettings("9600,7E1")]),
        (ESC + b"B96\x7f\x7f19\n", [Command.SETTINGS_PROMPT, Echo("96\b \b\b \b19"), SetSettings("19")]),
        (ESC + b"B\x7f\r", [Command.SETTINGS_PROMPT, SetSettings("")]),  # backspace on nothing: nothing
        (ESC + b"B12\x1bxy", [Command.SETTINGS_PROMPT, Echo("12"), Command.SETTINGS_CANCELLED, Data(b"xy")]),
        (ESC + b"B1" + ESC + b"z", [Command.SETTINGS_PROMPT, Echo("1"), Command.SETTINGS_CANCELLED, Data(b"z")]),
        (ESC + b"B\x01\xff5\r", [Command.SETTINGS_PROMPT, Echo("5"), SetSettings("5")]),  # no control chars
    ],
)
def test_fixtures(typed: bytes, items: list[Item]) -> None:
    assert parse(typed) == items
    assert parse(*(typed[i : i + 1] for i in range(len(typed)))) == items  # a byte at a time


def test_quit_ends_everything() -> None:
    parser = EscapeParser()
    assert parser.feed(b"a" + ESC) == [Data(b"a")]
    assert not parser.done
    assert parser.feed(b"q" + ESC + b"b") == [Command.QUIT]
    assert parser.done
    assert parser.feed(b"more") == []


def test_settings_line_is_bounded() -> None:
    items = parse(ESC + b"B" + b"9" * (MAX_LINE + 50) + b"\r")
    assert items[-1] == SetSettings("9" * MAX_LINE)


def test_large_data_is_one_item() -> None:
    data = bytes(range(256)).replace(ESC, b"") * 4096  # 1 MiB without the escape byte
    items = EscapeParser().feed(data)
    assert items == [Data(data)]


keyboard = st.lists(
    st.one_of(
        st.binary(max_size=20),
        st.sampled_from([ESC, ESC + ESC, ESC + b"d", ESC + b"B", b"\r", b"\x7f", b"\x1b", ESC + b"q", b"115200,8N1"]),
    ),
    max_size=30,
).map(b"".join)


@given(keyboard, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_split_gives_the_same_items(typed: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(typed)) for c in cuts})
    chunks = [typed[a:b] for a, b in zip([0, *points], [*points, len(typed)], strict=True)]
    assert parse(*chunks) == parse(typed)


@given(st.binary(max_size=300))
def test_without_escape_byte_data_passes_unchanged(data: bytes) -> None:
    data = data.replace(ESC, b"")
    assert parse(data) == ([Data(data)] if data else [])


@given(st.binary(max_size=300))
def test_doubled_escape_round_trips(data: bytes) -> None:
    """Doubling every 0x1d is how to send any bytes through the console."""
    assert parse(data.replace(ESC, ESC + ESC)) == ([Data(data)] if data else [])
