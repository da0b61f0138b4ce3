"""Reading certificates: the names a certificate holds, the serials a CRL revokes, and what
`comtunnel certs show` says about a directory. Nothing here needs a private key, so it works on
a hub or a client as well as where the CA lives.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from comtunnel.certnames import CRL_FILE, RESERVED
from comtunnel.errors import CertificateError, UsageError


def revoked_serials(crl_path: Path, ca_cert: x509.Certificate) -> dict[int, dt.datetime]:
    """Serials in a CRL signed by ``ca_cert`` (empty if there is no CRL yet)."""
    if not crl_path.exists():
        return {}
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except (ValueError, OSError) as exc:
        raise CertificateError(f"cannot read {crl_path}: {why(exc)}") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise CertificateError(f"{crl_path} is not signed by this CA")
    return {r.serial_number: r.revocation_date_utc for r in crl}


def certificate_name(cert: x509.Certificate | bytes) -> str:
    """The common name of a certificate (DER bytes or object): how the hub names a client in logs."""
    if isinstance(cert, bytes):
        try:
            cert = x509.load_der_x509_certificate(cert)
        except ValueError:
            raise CertificateError("not a DER-encoded X.509 certificate") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else "?"
    return value if isinstance(value, str) else value.decode(errors="replace")


def subject_alt_names(cert: x509.Certificate | bytes) -> list[str]:
    """The DNS names and IP addresses a certificate (DER bytes or object) is valid for, in its order."""
    if isinstance(cert, bytes):
        try:
            cert = x509.load_der_x509_certificate(cert)
        except ValueError:
            raise CertificateError("not a DER-encoded X.509 certificate") from None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError:  # a malformed extension: name nothing rather than fail
        return []
    return [str(entry.value) for entry in sans if isinstance(entry, x509.DNSName | x509.IPAddress)]


@dataclass(frozen=True)
class CertificateInfo:
    """What `certs show` says about one certificate in a directory."""

    name: str  # the file's stem: ca, hub or the client's name
    path: Path
    purpose: str  # "CA", "hub" or "client" (from the certificate, not the file name)
    common_name: str
    sans: list[str]
    not_after: dt.datetime
    sha256: str
    issued_by_ca: bool  # signed by DIR/ca.crt (always true for ca.crt itself)
    revoked: dt.datetime | None  # when, for a client in DIR/crl.pem

    @property
    def days_left(self) -> int:
        return (self.not_after - dt.datetime.now(dt.UTC)).days

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "file": str(self.path),
            "purpose": self.purpose,
            "cn": self.common_name,
            "sans": self.sans,
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "sha256": self.sha256,
            "issued_by_ca": self.issued_by_ca,
            "revoked": self.revoked.isoformat() if self.revoked is not None else None,
        }


def show_certificates(directory: Path, name: str | None = None) -> list[CertificateInfo]:
    """ca, hub and every client certificate in ``directory`` (or just ``name``), for `certs show`.

    Needs only the certificates (and crl.pem, if there is one), not ca.key: it works on a hub too.
    """
    if not directory.is_dir():
        raise CertificateError(f"certificate directory {directory} does not exist")
    stems = sorted(p.stem for p in directory.glob("*.crt") if p.is_file())
    order = [s for s in ("ca", "hub") if s in stems] + [s for s in stems if s not in RESERVED]
    if name is not None:
        if name not in order:
            raise UsageError(f"no certificate {name!r} in {directory} (there: {', '.join(order) or 'none'})")
        order = [name]
    ca_path = directory / "ca.crt"
    ca = read_certificate(ca_path) if ca_path.exists() else None
    revoked = revoked_serials(directory / CRL_FILE, ca) if ca is not None else {}
    return [_info(stem, directory / f"{stem}.crt", ca, revoked) for stem in order]


def format_certificates(infos: list[CertificateInfo]) -> str:
    """Aligned lines, one block per certificate."""
    blocks = []
    for info in infos:
        lines = [(f"{info.name} ({info.path})", "")]
        lines.append(("  purpose", info.purpose))
        lines.append(("  name (CN)", info.common_name))
        if info.sans:
            lines.append(("  SANs", ", ".join(info.sans)))
        left = info.days_left
        when = f"{info.not_after:%Y-%m-%d %H:%M} UTC"
        lines.append(("  not after", f"{when} ({left} days left)" if left >= 0 else f"{when} (EXPIRED)"))
        lines.append(("  SHA-256", info.sha256))
        if not info.issued_by_ca:
            lines.append(("  issuer", "NOT signed by ca.crt in this directory"))
        if info.purpose == "client":
            lines.append(("  revoked", f"yes, {info.revoked:%Y-%m-%d %H:%M} UTC" if info.revoked else "no"))
        width = max(len(key) for key, value in lines if value)
        blocks.append("\n".join(f"{key.ljust(width)}  {value}".rstrip() if value else key for key, value in lines))
    return "\n\n".join(blocks)


def _info(stem: str, path: Path, ca: x509.Certificate | None, revoked: dict[int, dt.datetime]) -> CertificateInfo:
    cert = read_certificate(path)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    if is_ca:
        purpose = "CA"
    elif ExtendedKeyUsageOID.SERVER_AUTH in usages:
        purpose = "hub"
    elif ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        purpose = "client"
    else:
        purpose = "unknown"
    issued = ca is not None and cert.issuer == ca.subject
    if issued and ca is not None and cert != ca:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            issued = False
    return CertificateInfo(
        name=stem,
        path=path,
        purpose=purpose,
        common_name=certificate_name(cert),
        sans=subject_alt_names(cert),
        not_after=cert.not_valid_after_utc,
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        issued_by_ca=issued,
        revoked=revoked.get(cert.serial_number) if issued and purpose == "client" else None,
    )


def read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise CertificateError(f"cannot read {path}: {why(exc)}") from None


def why(exc: BaseException) -> str:
    """The useful part of an error: strerror for OS errors, the first line for parser errors."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ValueError) and "PEM" in str(exc):
        return "not a PEM file"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
