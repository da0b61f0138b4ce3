"""comtunnel: serial ports over one mutual-TLS connection."""

__version__ = "0.1.0"
