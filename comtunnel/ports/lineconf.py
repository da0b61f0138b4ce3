"""PortSettings/ControlRequest to and from pyserial/termios, errno to PortError: apart from the I/O, to test alone."""

from __future__ import annotations

import errno
import termios

import serial

from comtunnel.errors import PortBusy, PortError, PortUnavailable
from comtunnel.ports import termios2
from comtunnel.protocol.settings import (
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    SettingsError,
    StopBits,
)

CMSPAR = 0o10000000000  # Linux: mark/space parity; not exported by the termios module
NO_LINES = {errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP}
_PYSERIAL_STOPBITS = {
    StopBits.ONE: serial.STOPBITS_ONE,
    StopBits.ONE_POINT_FIVE: serial.STOPBITS_ONE_POINT_FIVE,
    StopBits.TWO: serial.STOPBITS_TWO,
}
_BYTESIZE = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
_TIOCM = (
    (termios.TIOCM_CTS, ModemLines.CTS),
    (termios.TIOCM_DSR, ModemLines.DSR),
    (termios.TIOCM_RI, ModemLines.RI),
    (termios.TIOCM_CD, ModemLines.CD),
)


def configure(ser: serial.Serial, fd: int | None, s: PortSettings, *, own_ixon: bool) -> PortSettings:
    """Apply settings to an open port (worker thread); return what is in effect, read back from termios
    through ``fd`` (a posix port's), else from pyserial. ``own_ixon``: the caller does XON/XOFF on input
    itself (the fd path, see DevicePort._flow_control), so IXON is left off."""
    set_line(ser, s)
    if fd is None:
        return settings_from_pyserial(ser)
    effective = settings_from_termios(termios2.get(fd), s)
    if (effective.bytesize, effective.parity) != (s.bytesize, s.parity):
        # Tell pyserial what the device kept, so its later reconfigures stop asking for the impossible.
        set_line(ser, s.replace(bytesize=effective.bytesize, parity=effective.parity))
    if s.xonxoff and own_ixon:  # last: each pyserial reconfigure above turns IXON back on
        attrs = termios.tcgetattr(fd)
        attrs[0] &= ~termios.IXON
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return effective


def set_line(ser: serial.Serial, s: PortSettings) -> None:
    """pyserial's setters, each of which reconfigures an open port.

    A PTY (and some USB adapters) silently keeps CS8 and no parity; glibc's tcsetattr notices and
    reports EINVAL although the kernel applied everything else. That is "the device cannot hold
    this", not a failure: carry on, and let the read-back say what is in effect.
    """
    changes = (
        ("baudrate", s.baudrate),
        ("bytesize", s.bytesize),
        ("parity", s.parity.value),  # pyserial's PARITY_* are the same letters
        ("stopbits", _PYSERIAL_STOPBITS[s.stopbits]),
        ("xonxoff", s.xonxoff),
        ("rtscts", s.rtscts),
    )
    for attr, value in changes:
        try:
            setattr(ser, attr, value)
        except termios.error as exc:
            if exc.args[0] != errno.EINVAL:
                raise


def settings_from_pyserial(ser: serial.Serial) -> PortSettings:
    """What pyserial's attributes say is set (ports without a termios fd: ``loop://``, ``socket://``)."""
    stopbits = {v: k for k, v in _PYSERIAL_STOPBITS.items()}[ser.stopbits]
    return PortSettings(ser.baudrate, ser.bytesize, Parity(ser.parity), stopbits, bool(ser.xonxoff), bool(ser.rtscts))


def settings_from_termios(t: termios2.Termios2, requested: PortSettings) -> PortSettings:
    """What a tty holds; ``requested`` fills in what termios cannot tell (1.5 stop bits, a B0 rate)."""
    if not t.cflag & termios.PARENB:
        parity = Parity.NONE
    elif t.cflag & CMSPAR:
        parity = Parity.MARK if t.cflag & termios.PARODD else Parity.SPACE
    else:
        parity = Parity.ODD if t.cflag & termios.PARODD else Parity.EVEN
    stopbits = StopBits.TWO if t.cflag & termios.CSTOPB else StopBits.ONE
    if stopbits is StopBits.TWO and requested.stopbits is StopBits.ONE_POINT_FIVE:
        stopbits = StopBits.ONE_POINT_FIVE  # Linux has no 1.5: CSTOPB is what a UART turns into 1.5 at 5 bits
    try:
        return PortSettings(
            baudrate=t.baudrate or requested.baudrate,  # B0 ("hang up") is not a rate
            bytesize=_BYTESIZE[t.cflag & termios.CSIZE],
            parity=parity,
            stopbits=stopbits,
            xonxoff=bool(t.iflag & (termios.IXON | termios.IXOFF)),
            rtscts=bool(t.cflag & termios.CRTSCTS),
        )
    except SettingsError:
        return requested


def modem_from_tiocm(bits: int) -> ModemLines:
    """TIOCMGET's bits as our modem input lines."""
    lines = ModemLines.NONE
    for bit, line in _TIOCM:
        if bits & bit:
            lines |= line
    return lines


def set_lines(
    ser: serial.Serial, state: ControlState, request: ControlRequest
) -> tuple[ControlState, list[str], tuple[str, str] | None]:
    """Set what can be set (worker thread); return the new state, the lines the device lacks, any other failure."""
    missing: list[str] = []
    changes: dict[str, bool] = {}
    for attr, name, value in (("dtr", "DTR", request.dtr), ("rts", "RTS", request.rts)):
        if value is None:
            continue
        try:
            setattr(ser, attr, value)
            changes[attr] = value
        except OSError as exc:
            if exc.errno not in NO_LINES:
                return ControlRequest(**changes).apply_to(state), missing, (name, reason(exc))
            missing.append(name)
    if request.break_ is not None:
        try:
            ser.break_condition = request.break_
            changes["break_"] = request.break_
        except OSError as exc:
            if exc.errno not in NO_LINES:
                return ControlRequest(**changes).apply_to(state), missing, ("BREAK", reason(exc))
            missing.append("BREAK")
    return ControlRequest(**changes).apply_to(state), missing, None


def reason(exc: BaseException) -> str:
    """The short text of a failure: strerror for an OSError, the message for termios.error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, termios.error) and len(exc.args) == 2:
        return str(exc.args[1])
    return str(exc) or type(exc).__name__


def open_error(url: str, exc: BaseException) -> PortError:
    """What a failed open (OSError, pyserial's SerialException, ValueError) means, as our PortError."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT:
        return PortUnavailable(f"no such device: {url}")
    if code in (errno.EACCES, errno.EPERM):
        return PortUnavailable(f"permission denied opening {url} (add the user to the dialout group)")
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text:
        return PortBusy(f"{url} is in use by another program")
    if code in (errno.ENXIO, errno.ENODEV):
        return PortUnavailable(f"no such device: {url} (the driver finds no hardware behind it)")
    if "Could not configure port" in text:
        return PortUnavailable(f"{url} is not a serial port: {text}")
    return PortUnavailable(f"cannot open {url}: {text}")
