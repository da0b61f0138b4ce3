"""The names in a certificate directory, without cryptography.

A hub and a client need these at start (which file is whose, whether a client name is safe as a
file name) but never parse a certificate themselves: OpenSSL does. Keeping them apart from
`certs` and `certinfo` means a running hub or client never imports cryptography, which costs
about 10 MiB per process (issue 12, point 4).
"""

from __future__ import annotations

import re

from comtunnel.errors import UsageError

CRL_FILE = "crl.pem"
RESERVED = {"ca", "hub"}  # certificate stems that are not clients

_CLIENT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def check_client_name(name: str) -> None:
    """Client names become file names (NAME.crt), so nothing that could leave the directory or hide."""
    if not _CLIENT_NAME.fullmatch(name) or name.lower() in RESERVED:
        raise UsageError(
            f"client name {name!r} must be 1-64 letters, digits, '-', '_' or '.', not start with '.', "
            "and not be 'ca' or 'hub'"
        )
