"""Who may use which port, and which client certificates are revoked.

The policy comes from the hub config's ``[access]`` table: per client certificate name (or ``"*"``
for everyone else), glob patterns of ports with ``full`` access (read, write, settings, lines) or
``monitor`` access (the device's output only; several monitors may watch a port one client holds).
Without an ``[access]`` table every client has full access to every port.

Revocation is a standard X.509 CRL (``comtunnel certs revoke`` writes it), reloaded by the hub when
the file changes, so a lost laptop is cut off without a restart.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comtunnel.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)


class Access(enum.Enum):
    FULL = "full"
    MONITOR = "monitor"


class AccessPolicy:
    def __init__(self, rules: Mapping[str, Mapping[Access, list[str]]]) -> None:
        self.rules = rules

    @classmethod
    def from_table(cls, table: Any, source: str = "config") -> AccessPolicy:
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [access] must be a table of client names")
        rules: dict[str, dict[Access, list[str]]] = {}
        for client, entry in table.items():
            where = f"{source}: [access.{_quote(client)}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where} must be a table with 'full' and/or 'monitor' lists")
            unknown = set(entry) - {a.value for a in Access}
            if unknown:
                raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (use 'full' or 'monitor')")
            rules[client] = {}
            for access in Access:
                patterns = entry.get(access.value, [])
                if isinstance(patterns, str):
                    patterns = [patterns]
                if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
                    raise ConfigError(f"{where}: {access.value!r} must be a list of port names or patterns")
                rules[client][access] = patterns
        return cls(rules)

    def decide(self, client: str, port: str) -> Access | None:
        """The client's own entry if it has one, else ``"*"``; full wins over monitor; None: refused."""
        entry = self.rules.get(client, self.rules.get("*"))
        if entry is None:
            return None
        for access in (Access.FULL, Access.MONITOR):
            if any(fnmatch.fnmatchcase(port, pattern) for pattern in entry.get(access, [])):
                return access
        return None

    def describe(self, client: str, port: str) -> str:
        return f"client {client!r} may not open port {port!r} (hub access list)"

    def visible(self, client: str, ports: list[str]) -> dict[str, Access]:
        return {p: a for p in ports if (a := self.decide(client, p)) is not None}


def _quote(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'


class RevocationList:
    """Serials revoked by the CA's CRL at ``path``.

    It fails closed: a CRL that was read once and is then deleted, unreadable or not signed by the
    CA is logged as an error and the serials it last revoked stay refused. Only a CRL that never
    existed (crl.pem in --certs before the first ``certs revoke``) means nothing is revoked.

    The CA certificate is kept as PEM and cryptography imported only once a CRL is there to read,
    so a hub that has never revoked anything does not carry it (about 10 MiB).
    """

    def __init__(self, path: Path, ca_pem: bytes | None = None) -> None:
        self.path = path
        self.ca_pem = ca_pem
        self._ca_cert: x509.Certificate | None = None
        self.serials: frozenset[int] = frozenset()
        self._stamp: tuple[int, int, int] | str | None = None
        self.loaded = False  # a valid CRL was read at least once: from then on, none is an error

    def reload_if_changed(self) -> bool:
        """Re-read the CRL if the file changed; True if the revoked set changed. Never raises:
        a broken CRL keeps the previous list and is logged once per change of the file."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            if self._stamp != "unreadable":
                log.error(
                    "cannot read the revocation list %s: %s; still refusing what it revoked", self.path, exc.strerror
                )
            self._stamp = "unreadable"
            return False
        if stamp == self._stamp:
            return False
        if stamp is None:
            if self.loaded:
                log.error(
                    "the revocation list %s is gone; still refusing the %d certificates it revoked "
                    "(restore it, or write a new one with 'comtunnel certs revoke')",
                    self.path,
                    len(self.serials),
                )
            self._stamp = stamp
            return False
        self._stamp = stamp
        from cryptography import x509

        try:
            crl = x509.load_pem_x509_crl(self.path.read_bytes())
            ca = self._ca()
            if ca is not None and (crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key())):  # type: ignore[arg-type]
                raise ValueError("it is not signed by this hub's CA")
        except (ValueError, OSError) as exc:
            log.error("ignoring the revocation list %s: %s; still refusing what it revoked before", self.path, exc)
            return False
        serials = frozenset(r.serial_number for r in crl)
        self.loaded = True
        changed = serials != self.serials
        self.serials = serials
        return changed

    def is_revoked(self, cert_der: bytes) -> bool:
        if not self.serials:
            return False  # nothing revoked, or no CRL yet: and cryptography not loaded
        from cryptography import x509

        try:
            cert = x509.load_der_x509_certificate(cert_der)
        except ValueError:
            return True  # cannot happen after a verified handshake; refuse rather than guess
        ca = self._ca()
        if ca is not None and cert.issuer != ca.subject:
            return False
        return cert.serial_number in self.serials

    def _ca(self) -> x509.Certificate | None:
        """The CA certificate, parsed on first use (the PEM was read, and checked by OpenSSL, at start)."""
        if self._ca_cert is None and self.ca_pem is not None:
            from cryptography import x509

            self._ca_cert = x509.load_pem_x509_certificate(self.ca_pem)
        return self._ca_cert
