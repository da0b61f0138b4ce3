"""How much a busy port may read in one turn of the event loop: its share of the loop.

A port that is the only one with data reads a large quantum per wake-up (fewer frames, TLS records
and sends per byte). While another port of the same process has had data within ``recent``
seconds, a busy port reads the small quantum instead (one PTY read), so a quiet port's message
waits behind at most that much of the busy port's work in each process. Measured on the 2-core
host: a quiet echo under an unpaced flood, p50 1.1-1.3 ms with a 16 KiB quantum, 0.7 ms with a
4 KiB one; alone, a 4 KiB quantum costs 15-25% more CPU per byte than 16 KiB (and 64 KiB gains
nothing over 16 KiB).

Pure: port keys and times in, a size out. One instance serves every port of a process.
"""

from __future__ import annotations

#: One wake-up's read while this port is the only busy one: four PTY reads (a tty hands out 4 KiB).
ALONE = 16 * 1024
#: While other ports have data: one PTY read.
SHARED = 4 * 1024
#: Another port's read this recent makes the loop shared.
RECENT = 0.02
#: A read shorter than this ends the wake-up's drain: the port had a small message, and asking
#: again would only cost a system call and an EAGAIN exception per message (the fd is
#: level-triggered, so whatever arrives meanwhile is read on the next turn).
SHORT_READ = 1024


class ReadQuantum:
    def __init__(self, alone: int = ALONE, shared: int = SHARED, recent: float = RECENT) -> None:
        self.alone = alone
        self.shared = shared
        self.recent = recent
        self._port = 0  # id() of the port that read last: no reference keeps a closed port alive
        self._at = float("-inf")  # when it did
        self._other_at = float("-inf")  # the last read of any other port

    def read(self, port: object, now: float) -> None:
        """``port`` read data at ``now``."""
        key = id(port)
        if key != self._port:
            self._other_at = self._at
            self._port = key
        self._at = now

    def size(self, port: object, now: float) -> int:
        """What ``port`` may read in this wake-up."""
        other = self._at if id(port) != self._port else self._other_at
        return self.shared if now - other < self.recent else self.alone


#: The process's instance: every port on the loop shares it.
QUANTUM = ReadQuantum()
