"""Emulated serial devices on PTY pairs, for the demo, tests and benchmarks.

Each device owns the master side of a PTY and offers the slave path as its "serial port", so the
hub opens it like any real device. The device keeps a slave fd of its own open, so the master
stays usable while the hub has the port closed.
"""
