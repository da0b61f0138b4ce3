"""The vocabulary of a serial line: line settings, control lines, modem lines, purge targets.

Shared by the tunnel protocol, the RFC 2217 codec and the port backends, so a value means the
same thing everywhere. Values are validated on construction: a PortSettings that exists is a
valid one.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

MIN_BAUDRATE = 1
MAX_BAUDRATE = 100_000_000


class Parity(enum.StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"
    MARK = "M"
    SPACE = "S"


class StopBits(enum.StrEnum):
    ONE = "1"
    ONE_POINT_FIVE = "1.5"
    TWO = "2"

    @property
    def as_float(self) -> float:
        return float(self.value)


class ModemLines(enum.IntFlag):
    """Modem input lines, with the bit values of RFC 2217 NOTIFY-MODEMSTATE (section 'Modem state')."""

    NONE = 0
    CTS = 0x10
    DSR = 0x20
    RI = 0x40
    CD = 0x80

    def describe(self) -> str:
        names = ("CTS", "DSR", "RI", "CD")
        return " ".join(f"{n}={'on' if self & ModemLines[n] else 'off'}" for n in names)


class Purge(enum.IntFlag):
    """Which buffers of the device side to discard; named from the device's point of view like RFC 2217."""

    RECEIVE = 1
    TRANSMIT = 2
    BOTH = 3


class SettingsError(ValueError):
    """A line setting or a settings string that cannot be used."""


@dataclasses.dataclass(frozen=True, slots=True)
class PortSettings:
    """Line settings. Any integer baud rate is allowed: non-standard rates are common on embedded parts."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = Parity.NONE
    stopbits: StopBits = StopBits.ONE
    xonxoff: bool = False
    rtscts: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.baudrate, int) or isinstance(self.baudrate, bool):
            raise SettingsError(f"baud rate must be an integer, not {self.baudrate!r}")
        if not MIN_BAUDRATE <= self.baudrate <= MAX_BAUDRATE:
            raise SettingsError(f"baud rate {self.baudrate} is out of range")
        if type(self.bytesize) is not int or self.bytesize not in (5, 6, 7, 8):
            raise SettingsError(f"data bits must be 5, 6, 7 or 8, not {self.bytesize!r}")
        object.__setattr__(self, "parity", _enum(Parity, self.parity, "parity"))
        object.__setattr__(self, "stopbits", _enum(StopBits, self.stopbits, "stop bits"))
        if not isinstance(self.xonxoff, bool) or not isinstance(self.rtscts, bool):
            raise SettingsError("flow control flags must be booleans")

    def replace(self, **changes: Any) -> PortSettings:
        return dataclasses.replace(self, **changes)

    def to_wire(self) -> dict[str, Any]:
        return {
            "baud": self.baudrate,
            "bits": self.bytesize,
            "parity": self.parity.value,
            "stop": self.stopbits.value,
            "xonxoff": self.xonxoff,
            "rtscts": self.rtscts,
        }

    @classmethod
    def from_wire(cls, data: Mapping[Any, Any]) -> PortSettings:
        """Build from a wire map; raises SettingsError on missing keys or bad values."""
        try:
            return cls(
                baudrate=data["baud"],
                bytesize=data["bits"],
                parity=data["parity"],
                stopbits=data["stop"],
                xonxoff=data["xonxoff"],
                rtscts=data["rtscts"],
            )
        except (KeyError, TypeError) as exc:
            raise SettingsError(f"incomplete settings: {exc}") from None

    def short(self) -> str:
        """The conventional form, e.g. '115200,8N1' (what :func:`parse_line_settings` reads)."""
        flow = ",rtscts" if self.rtscts else ""
        flow += ",xonxoff" if self.xonxoff else ""
        return f"{self.baudrate},{self.bytesize}{self.parity.value}{self.stopbits.value}{flow}"


def _enum(kind: type[enum.StrEnum], value: object, what: str) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise SettingsError(f"{what} must be one of {allowed}, not {value!r}") from None


_FRAME_RE = re.compile(r"^([5-8])([NEOMS])(1|1\.5|2)$", re.IGNORECASE)


def parse_line_settings(text: str, base: PortSettings | None = None) -> PortSettings:
    """Parse '4800', '4800,7E1', '115200,8N1,rtscts' or '7E1' into settings.

    Items are comma separated: an integer baud rate, a frame like 8N1 / 7E2 / 8N1.5, and the
    flow-control words 'rtscts' and 'xonxoff'.
    """
    settings = base or PortSettings()
    changes: dict[str, Any] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.isdigit():
            changes["baudrate"] = int(item)
        elif match := _FRAME_RE.match(item):
            changes["bytesize"] = int(match.group(1))
            changes["parity"] = Parity(match.group(2).upper())
            changes["stopbits"] = StopBits(match.group(3))
        elif item.lower() in ("rtscts", "xonxoff"):
            changes[item.lower()] = True
        else:
            raise SettingsError(
                f"cannot read {item!r} in {text!r}: expected a baud rate, a frame such as 8N1, 'rtscts' or 'xonxoff'"
            )
    return settings.replace(**changes)


@dataclasses.dataclass(frozen=True, slots=True)
class ControlState:
    """Output control lines and BREAK as the device has them."""

    dtr: bool = False
    rts: bool = False
    break_: bool = False

    def to_wire(self) -> dict[str, bool]:
        return {"dtr": self.dtr, "rts": self.rts, "break": self.break_}


@dataclasses.dataclass(frozen=True, slots=True)
class ControlRequest:
    """A change of output control lines; None leaves a line as it is."""

    dtr: bool | None = None
    rts: bool | None = None
    break_: bool | None = None

    def to_wire(self) -> dict[str, bool]:
        out = {"dtr": self.dtr, "rts": self.rts, "break": self.break_}
        return {k: v for k, v in out.items() if v is not None}

    def apply_to(self, state: ControlState) -> ControlState:
        return ControlState(
            dtr=state.dtr if self.dtr is None else self.dtr,
            rts=state.rts if self.rts is None else self.rts,
            break_=state.break_ if self.break_ is None else self.break_,
        )
