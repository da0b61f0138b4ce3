"""lineconf on real pyserial objects: ``loop://`` (pyserial's attributes) and a PTY pair (termios, termios2).

A PTY holds the rate, stop bits and flow control but always keeps CS8 and no parity: the read-back
must say so rather than echo the request.
"""

from __future__ import annotations

import contextlib
import errno
import os
import termios
from collections.abc import Iterator

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st
from support import PtyDevice

from comtunnel.errors import PortBusy, PortUnavailable
from comtunnel.ports import lineconf, termios2
from comtunnel.protocol.settings import (
    MAX_BAUDRATE,
    MIN_BAUDRATE,
    ControlRequest,
    ControlState,
    ModemLines,
    Parity,
    PortSettings,
    StopBits,
)

port_settings = st.builds(
    PortSettings,
    baudrate=st.integers(MIN_BAUDRATE, MAX_BAUDRATE),
    bytesize=st.sampled_from([5, 6, 7, 8]),
    parity=st.sampled_from(list(Parity)),
    stopbits=st.sampled_from(list(StopBits)),
    xonxoff=st.booleans(),
    rtscts=st.booleans(),
)
optional_bool = st.none() | st.booleans()


@pytest.fixture
def pty() -> Iterator[tuple[PtyDevice, serial.Serial]]:
    """A PTY 'device' opened with pyserial, as DevicePort opens one."""
    device = PtyDevice()
    ser = serial.Serial(device.path, exclusive=True)
    try:
        yield device, ser
    finally:
        with contextlib.suppress(Exception):
            ser.close()
        device.close()


def _loop() -> serial.Serial:
    return serial.serial_for_url("loop://")


# --- settings on loop:// (no termios: pyserial's attributes are the truth) ---------------------------


@settings(max_examples=200, deadline=None)
@given(port_settings)
def test_every_setting_round_trips_on_loop(s: PortSettings) -> None:
    ser = _loop()
    try:
        assert lineconf.configure(ser, None, s, own_ixon=False) == s
        assert (ser.baudrate, ser.bytesize, ser.parity) == (s.baudrate, s.bytesize, s.parity.value)
        assert ser.stopbits == s.stopbits.as_float
        assert (ser.xonxoff, ser.rtscts) == (s.xonxoff, s.rtscts)
        assert lineconf.settings_from_pyserial(ser) == s
    finally:
        ser.close()


# --- settings on a PTY (read back from termios) ---------------------------------------------------


@pytest.mark.parametrize("bytesize", [5, 6, 7, 8])
@pytest.mark.parametrize("parity", list(Parity))
def test_a_pty_keeps_rate_stop_bits_and_flow_but_reports_its_own_data_bits_and_parity(
    pty: tuple[PtyDevice, serial.Serial], bytesize: int, parity: Parity
) -> None:
    device, ser = pty
    for stopbits in StopBits:
        for baudrate, rtscts in ((9600, False), (250000, True), (12_000_000, False)):
            s = PortSettings(baudrate, bytesize, parity, stopbits, rtscts=rtscts)
            effective = lineconf.configure(ser, ser.fileno(), s, own_ixon=True)
            assert effective == s.replace(bytesize=8, parity=Parity.NONE)
            t = termios2.get(device.slave)
            assert t.cflag & termios.CSIZE == termios.CS8 and not t.cflag & termios.PARENB
            assert bool(t.cflag & termios.CSTOPB) == (stopbits is not StopBits.ONE)
            assert bool(t.cflag & termios.CRTSCTS) == rtscts
            if baudrate == 9600:
                assert t.cflag & termios2.CBAUD == termios.B9600
            else:  # no Bxxx constant: only termios2's BOTHER carries it
                assert (t.cflag & termios2.CBAUD, t.ispeed, t.ospeed) == (termios2.BOTHER, baudrate, baudrate)
            # pyserial is told what the device kept, so its next reconfigure does not ask again
            assert (ser.bytesize, ser.parity) == (8, serial.PARITY_NONE)


def test_set_line_tolerates_what_a_pty_refuses_but_not_a_real_failure(pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, ser = pty
    lineconf.set_line(ser, PortSettings(250000, 7, Parity.EVEN, StopBits.TWO))  # glibc reports EINVAL: swallowed
    t = termios2.get(device.slave)
    assert t.ospeed == 250000 and t.cflag & termios.CSTOPB  # the rest was applied
    assert t.cflag & termios.CSIZE == termios.CS8
    os.close(device.master)  # unplugged: the kernel hangs the slave up, its ioctls fail with EIO
    with pytest.raises(serial.SerialException, match="Could not configure port"):
        lineconf.set_line(ser, PortSettings(9600))


def test_own_ixon_leaves_xon_xoff_on_input_to_the_caller(pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, ser = pty
    s = PortSettings(115200, xonxoff=True)
    assert lineconf.configure(ser, ser.fileno(), s, own_ixon=True) == s
    iflag = termios2.get(device.slave).iflag
    assert iflag & termios.IXOFF and not iflag & termios.IXON
    assert lineconf.configure(ser, ser.fileno(), s, own_ixon=False) == s
    iflag = termios2.get(device.slave).iflag
    assert iflag & termios.IXOFF and iflag & termios.IXON  # the kernel's IXON, as pyserial sets it


def test_own_ixon_holds_when_the_device_refuses_the_data_bits(pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, ser = pty
    lineconf.configure(ser, ser.fileno(), PortSettings(115200, 7, Parity.EVEN, xonxoff=True), own_ixon=True)
    assert not termios2.get(device.slave).iflag & termios.IXON


def test_settings_from_termios_reads_what_the_pty_holds(pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, _ = pty
    t = termios2.get(device.slave)
    t.set_baudrate(250000)
    t.cflag |= termios.CSTOPB | termios.CRTSCTS
    t.iflag |= termios.IXOFF
    termios2.set(device.slave, t)
    held = termios2.get(device.slave)
    assert lineconf.settings_from_termios(held, PortSettings()) == PortSettings(
        250000, 8, Parity.NONE, StopBits.TWO, xonxoff=True, rtscts=True
    )
    # Linux has no 1.5 stop bits: CSTOPB stands for it when that was asked for
    assert lineconf.settings_from_termios(held, PortSettings(stopbits=StopBits.ONE_POINT_FIVE)).stopbits is (
        StopBits.ONE_POINT_FIVE
    )
    attrs = termios.tcgetattr(device.slave)  # a standard rate through the plain termios module
    attrs[4] = attrs[5] = termios.B57600
    termios.tcsetattr(device.slave, termios.TCSANOW, attrs)
    assert lineconf.settings_from_termios(termios2.get(device.slave), PortSettings()).baudrate == 57600


@pytest.mark.parametrize("bytesize, csize", [(5, termios.CS5), (6, termios.CS6), (7, termios.CS7), (8, termios.CS8)])
@pytest.mark.parametrize(
    "parity, bits",
    [
        (Parity.NONE, 0),
        (Parity.EVEN, termios.PARENB),
        (Parity.ODD, termios.PARENB | termios.PARODD),
        (Parity.MARK, termios.PARENB | lineconf.CMSPAR | termios.PARODD),
        (Parity.SPACE, termios.PARENB | lineconf.CMSPAR),
        (Parity.NONE, lineconf.CMSPAR | termios.PARODD),  # without PARENB there is no parity at all
    ],
)
def test_settings_from_termios_decodes_every_size_and_parity(
    pty: tuple[PtyDevice, serial.Serial], bytesize: int, csize: int, parity: Parity, bits: int
) -> None:
    """What a UART would hold (a PTY cannot): the termios2 a real PTY returns, with cflag as a UART's."""
    device, _ = pty
    t = termios2.get(device.slave)
    t.cflag = (t.cflag & ~(termios.CSIZE | termios.PARENB | termios.PARODD | lineconf.CMSPAR)) | csize | bits
    assert lineconf.settings_from_termios(t, PortSettings()) == PortSettings(t.baudrate, bytesize, parity)


def test_settings_from_termios_keeps_the_requested_rate_for_b0(pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, _ = pty
    t = termios2.get(device.slave)
    t.cflag &= ~termios2.CBAUD  # B0: "hang up", not a rate
    t.ispeed = t.ospeed = 0
    assert lineconf.settings_from_termios(t, PortSettings(4800)).baudrate == 4800


@given(st.integers(0, 0xFFFF))
def test_modem_from_tiocm_takes_the_input_lines_only(bits: int) -> None:
    lines = lineconf.modem_from_tiocm(bits)
    assert (ModemLines.CTS in lines) == bool(bits & termios.TIOCM_CTS)
    assert (ModemLines.DSR in lines) == bool(bits & termios.TIOCM_DSR)
    assert (ModemLines.RI in lines) == bool(bits & termios.TIOCM_RI)
    assert (ModemLines.CD in lines) == bool(bits & termios.TIOCM_CD)
    assert lineconf.modem_from_tiocm(termios.TIOCM_DTR | termios.TIOCM_RTS) == ModemLines.NONE


# --- control lines ----------------------------------------------------------------------------------


@given(
    st.builds(ControlState, st.booleans(), st.booleans(), st.booleans()),
    st.builds(ControlRequest, optional_bool, optional_bool, optional_bool),
)
def test_set_lines_on_loop_sets_what_is_asked_and_loop_wires_it_back(
    state: ControlState, request: ControlRequest
) -> None:
    ser = _loop()
    try:
        ser.dtr, ser.rts, ser.break_condition = state.dtr, state.rts, state.break_
        new, missing, error = lineconf.set_lines(ser, state, request)
        assert (new, missing, error) == (request.apply_to(state), [], None)
        assert (ser.dsr, ser.cts, ser.break_condition) == (new.dtr, new.rts, new.break_)  # loop:// wiring
    finally:
        ser.close()


def test_set_lines_on_a_pty_says_it_has_no_dtr_or_rts(pty: tuple[PtyDevice, serial.Serial]) -> None:
    _, ser = pty
    state = ControlState()
    assert lineconf.set_lines(ser, state, ControlRequest(dtr=True, rts=True, break_=True)) == (
        ControlState(break_=True),  # a PTY takes BREAK (and ignores it)
        ["DTR", "RTS"],
        None,
    )
    assert lineconf.set_lines(ser, state, ControlRequest(rts=False)) == (state, ["RTS"], None)


def test_set_lines_stops_at_a_real_failure(pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, ser = pty
    os.close(device.master)  # unplugged: the kernel hangs the slave up, its ioctls fail with EIO
    state = ControlState(dtr=True)
    bad = os.strerror(errno.EIO)
    assert lineconf.set_lines(ser, state, ControlRequest(dtr=False, rts=True)) == (state, [], ("DTR", bad))
    assert lineconf.set_lines(ser, state, ControlRequest(rts=True)) == (state, [], ("RTS", bad))
    assert lineconf.set_lines(ser, state, ControlRequest(break_=True)) == (state, [], ("BREAK", bad))


# --- failures as text and as PortError ---------------------------------------------------------------


def test_reason_is_the_short_text(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(OSError) as caught:
        os.open(os.path.join(tmp_path, "nothing"), os.O_RDONLY)
    assert lineconf.reason(caught.value) == "No such file or directory"
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        with pytest.raises(termios.error) as not_a_tty:
            termios.tcgetattr(fd)
    finally:
        os.close(fd)
    assert lineconf.reason(not_a_tty.value) == "Inappropriate ioctl for device"
    assert lineconf.reason(serial.SerialException("Could not configure port")) == "Could not configure port"
    assert lineconf.reason(ValueError()) == "ValueError"


def test_open_error_for_real_failures(tmp_path: os.PathLike[str], pty: tuple[PtyDevice, serial.Serial]) -> None:
    device, _ = pty  # already opened exclusively by the fixture
    cases = {
        os.path.join(tmp_path, "ttyUSB9"): (PortUnavailable, "no such device: {}"),
        device.path: (PortBusy, "{} is in use by another program"),
        os.devnull: (PortUnavailable, "{} is not a serial port: Could not configure port: "),
    }
    for path, (kind, text) in cases.items():
        with pytest.raises(serial.SerialException) as caught:
            serial.Serial(path, exclusive=True)
        err = lineconf.open_error(path, caught.value)
        assert type(err) is kind
        assert str(err).startswith(text.format(path)), str(err)


@pytest.mark.parametrize(
    "code, kind, text",
    [
        (errno.ENOENT, PortUnavailable, "no such device: /dev/ttyX"),
        (errno.EACCES, PortUnavailable, "permission denied opening /dev/ttyX (add the user to the dialout group)"),
        (errno.EPERM, PortUnavailable, "permission denied opening /dev/ttyX (add the user to the dialout group)"),
        (errno.EBUSY, PortBusy, "/dev/ttyX is in use by another program"),
        (errno.EAGAIN, PortBusy, "/dev/ttyX is in use by another program"),
        (errno.ENXIO, PortUnavailable, "no such device: /dev/ttyX (the driver finds no hardware behind it)"),
        (errno.ENODEV, PortUnavailable, "no such device: /dev/ttyX (the driver finds no hardware behind it)"),
    ],
)
def test_open_error_by_errno(code: int, kind: type[Exception], text: str) -> None:
    # both forms seen in practice: pyserial's SerialException(errno, msg) and a bare OSError
    for exc in (
        serial.SerialException(code, f"could not open port /dev/ttyX: [Errno {code}] {os.strerror(code)}"),
        OSError(code, os.strerror(code), "/dev/ttyX"),
    ):
        err = lineconf.open_error("/dev/ttyX", exc)
        assert type(err) is kind and str(err) == text


def test_open_error_otherwise_keeps_the_text() -> None:
    err = lineconf.open_error("/dev/ttyX", OSError(errno.EIO, "Input/output error"))
    assert type(err) is PortUnavailable and str(err) == "cannot open /dev/ttyX: [Errno 5] Input/output error"
    err = lineconf.open_error("/dev/ttyX", serial.SerialException("Could not exclusively lock port /dev/ttyX"))
    assert type(err) is PortBusy
