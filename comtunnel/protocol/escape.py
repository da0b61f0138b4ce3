"""The console's escape key, as a state machine: keyboard bytes in, bytes for the port and commands out.

Theory of operation. ``comtunnel console`` passes what the user types to the port unchanged,
except for one escape byte, Ctrl-] (0x1d, telnet's and picocom's choice, rare in serial traffic).
The byte after it is a command letter:

====================  ==============================================================
``q``                 quit
``b``                 send a BREAK
``d`` / ``r``         toggle DTR / RTS
``s``                 show the line state
``B``                 read a settings line (``115200,8N1``, ``9600``, ``7E1``...) up to
                      Enter; Backspace edits it, Esc or Ctrl-] abandons it
``Ctrl-]``            a literal 0x1d goes to the port
``?`` / ``h``         help
anything else         :class:`Unknown` (the shell shows the help hint); the byte is dropped
====================  ==============================================================

:meth:`EscapeParser.feed` returns the data and commands in input order, so the shell applies a
DTR toggle after the bytes typed before it. Any split of the same input gives the same sequence
once adjacent :class:`Data` and :class:`Echo` items are joined: the tests check that with
hypothesis. Data between escapes is sliced with ``bytes.find``, never walked byte by byte; only
the settings line, which a person types, is read one byte at a time. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum

ESCAPE = 0x1D  # Ctrl-]
ESCAPE_NAME = "Ctrl-]"
MAX_LINE = 64  # a settings line is short; more is ignored rather than buffered without bound


@dataclasses.dataclass(frozen=True, slots=True)
class Data:
    """Bytes for the port, as typed."""

    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Echo:
    """Text to show while the settings line is typed (raw mode has no echo of its own)."""

    text: str


class Command(enum.Enum):
    QUIT = "q"
    BREAK = "b"
    TOGGLE_DTR = "d"
    TOGGLE_RTS = "r"
    SHOW_STATE = "s"
    HELP = "?"
    SETTINGS_PROMPT = "B"  # the settings line begins: the shell shows a prompt
    SETTINGS_CANCELLED = "cancel"


@dataclasses.dataclass(frozen=True, slots=True)
class SetSettings:
    """The settings line as typed, for the shell to parse against the settings in effect."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Unknown:
    """A byte after the escape that is no command."""

    key: int


Item = Data | Echo | Command | SetSettings | Unknown

_LETTERS = {ord(c.value): c for c in Command if len(c.value) == 1 and c is not Command.SETTINGS_PROMPT}
_LETTERS[ord("h")] = Command.HELP

HELP = (
    f"{ESCAPE_NAME} q quit | b BREAK | d toggle DTR | r toggle RTS | s line state | "
    f"B settings (e.g. 115200,8N1) | {ESCAPE_NAME} {ESCAPE_NAME} sends {ESCAPE_NAME} | ? help"
)


class _State(enum.Enum):
    DATA = "data"
    ESCAPED = "escaped"  # the escape byte came; the next byte is a command
    LINE = "line"  # reading a settings line
    DONE = "done"  # quit: everything after it is ignored


class EscapeParser:
    def __init__(self) -> None:
        self._state = _State.DATA
        self._line = bytearray()

    @property
    def done(self) -> bool:
        """Quit was typed; further input is ignored."""
        return self._state is _State.DONE

    def feed(self, data: bytes) -> list[Item]:
        """The items ``data`` yields, in order; adjacent data is one :class:`Data`."""
        out: list[Item] = []
        pos, size = 0, len(data)
        while pos < size and self._state is not _State.DONE:
            if self._state is _State.DATA:
                at = data.find(ESCAPE, pos)
                end = size if at < 0 else at
                if end > pos:
                    _add_data(out, data[pos:end])
                if at >= 0:
                    self._state = _State.ESCAPED
                pos = end + 1
            elif self._state is _State.ESCAPED:
                self._command(data[pos], out)
                pos += 1
            else:
                self._line_byte(data[pos], out)
                pos += 1
        return out

    def _command(self, key: int, out: list[Item]) -> None:
        self._state = _State.DATA
        if key == ESCAPE:
            _add_data(out, bytes([ESCAPE]))
        elif key == ord("B"):
            self._state = _State.LINE
            self._line.clear()
            out.append(Command.SETTINGS_PROMPT)
        elif key in _LETTERS:
            command = _LETTERS[key]
            out.append(command)
            if command is Command.QUIT:
                self._state = _State.DONE
        else:
            out.append(Unknown(key))

    def _line_byte(self, key: int, out: list[Item]) -> None:
        if key in (0x0D, 0x0A):
            self._state = _State.DATA
            out.append(SetSettings(self._line.decode("ascii")))
        elif key in (0x1B, ESCAPE, 0x03):  # Esc, Ctrl-] or Ctrl-C: never mind
            self._state = _State.DATA
            out.append(Command.SETTINGS_CANCELLED)
        elif key in (0x7F, 0x08):
            if self._line:
                del self._line[-1]
                _add_echo(out, "\b \b")
        elif 0x20 <= key < 0x7F and len(self._line) < MAX_LINE:
            self._line.append(key)
            _add_echo(out, chr(key))


def _add_data(out: list[Item], data: bytes) -> None:
    if out and isinstance(out[-1], Data):
        out[-1] = Data(out[-1].data + data)
    else:
        out.append(Data(data))


def _add_echo(out: list[Item], text: str) -> None:
    if out and isinstance(out[-1], Echo):
        out[-1] = Echo(out[-1].text + text)
    else:
        out.append(Echo(text))
