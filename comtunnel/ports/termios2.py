"""Linux ``struct termios2`` access, the only way to read and set arbitrary baud rates exactly.

The stdlib termios module knows only the Bxxx constants; TCGETS2/TCSETS2 with BOTHER carry any
integer rate (250000, 12000000...). Layout: four tcflag_t, c_line, c_cc[19], c_ispeed, c_ospeed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import struct
import termios

_FORMAT = struct.Struct("=IIIIB19sII")
TCGETS2 = 0x802C542A
TCSETS2 = 0x402C542B
BOTHER = 0o010000
CBAUD = 0o010017
EXTPROC = 0o200000
TIOCPKT = 0x5420
TIOCPKT_FLUSHREAD = 0x01
TIOCPKT_FLUSHWRITE = 0x02
TIOCPKT_IOCTL = 0x40

_SPEEDS = {getattr(termios, name): int(name[1:]) for name in dir(termios) if name[0] == "B" and name[1:].isdigit()}


@dataclasses.dataclass
class Termios2:
    iflag: int
    oflag: int
    cflag: int
    lflag: int
    line: int
    cc: bytes
    ispeed: int
    ospeed: int

    @property
    def baudrate(self) -> int:
        if self.cflag & CBAUD == BOTHER:
            return self.ospeed
        return _SPEEDS.get(self.cflag & CBAUD, self.ospeed)

    def set_baudrate(self, baud: int) -> None:
        self.cflag = (self.cflag & ~CBAUD) | BOTHER
        self.ispeed = self.ospeed = baud


def get(fd: int) -> Termios2:
    raw = fcntl.ioctl(fd, TCGETS2, bytes(_FORMAT.size))
    return Termios2(*_FORMAT.unpack(raw))


def set(fd: int, t: Termios2) -> None:
    fcntl.ioctl(fd, TCSETS2, _FORMAT.pack(t.iflag, t.oflag, t.cflag, t.lflag, t.line, t.cc, t.ispeed, t.ospeed))


def make_raw(t: Termios2) -> None:
    """cfmakeraw(): 8-bit clean, no echo, no signals, no CR/LF translation, read returns per byte."""
    t.iflag &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
        | termios.IXOFF
    )
    t.oflag &= ~termios.OPOST
    t.lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    t.cflag = (t.cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD | termios.CLOCAL
    cc = bytearray(t.cc)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    t.cc = bytes(cc)
