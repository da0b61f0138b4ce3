"""Certificates for mutual TLS: one private CA, a hub certificate, one certificate per client.

Why a private CA: the hub must know *which* client connects (names appear in logs and, later,
access rules) and clients must trust only their own hubs, never the public web PKI. EC P-256
keys keep generation instant and handshakes fast. Key files are created 0600 from the start
(never chmod after writing, which would leave a window where they are readable).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from comtunnel.errors import CertificateError, UsageError

_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
_RESERVED = {"ca", "hub"}


def init_certs(
    directory: Path, hub_names: list[str], clients: list[str], *, days: int = 3650, overwrite: bool = False
) -> list[Path]:
    """Create ca.*, hub.* and NAME.* for each client in ``directory``; return the files written."""
    if not hub_names:
        raise UsageError("give at least one --hub-name (the DNS name or IP address clients connect to)")
    for name in clients:
        _check_client_name(name)
    if len(set(clients)) != len(clients):
        raise UsageError("a client name is given twice")
    if (directory / "ca.key").exists() and not overwrite:
        raise UsageError(f"{directory} already holds a CA; use --force to replace it (old certificates stop working)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from None
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "comtunnel CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    written = [
        _write_key(directory / "ca.key", ca_key),
        _write_cert(directory / "ca.crt", ca_cert),
    ]
    sans: list[x509.GeneralName] = [_san(name) for name in hub_names]
    written += _issue(directory, "hub", hub_names[0], ca_cert, ca_key, days, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    for name in clients:
        written += _issue(directory, name, name, ca_cert, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return written


def add_client(directory: Path, name: str, *, days: int = 3650) -> list[Path]:
    """Sign a certificate for a new client with the CA already in ``directory``."""
    _check_client_name(name)
    ca_cert, ca_key = _load_ca(directory)
    if (directory / f"{name}.crt").exists():
        raise UsageError(f"client {name!r} already exists in {directory}")
    return _issue(directory, name, name, ca_cert, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def certificate_name(cert: x509.Certificate | bytes) -> str:
    """The common name of a certificate (DER bytes or object): how we name a client in logs."""
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else "?"
    return value if isinstance(value, str) else value.decode(errors="replace")


# --- internals ----------------------------------------------------------------------------------


def _check_client_name(name: str) -> None:
    if not _NAME_RE.match(name) or name in _RESERVED:
        raise UsageError(
            f"client name {name!r} must be letters, digits, '-', '_' or '.', not start with '.', "
            "and not be 'ca' or 'hub'"
        )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _issue(
    directory: Path,
    filename: str,
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> list[Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return [_write_key(directory / f"{filename}.key", key), _write_cert(directory / f"{filename}.crt", cert)]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertificateError(
            f"{exc.filename} not found: create a CA first with 'comtunnel certs init {directory} --hub-name NAME'"
        ) from None
    except (ValueError, OSError) as exc:
        raise CertificateError(f"cannot read the CA in {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{directory / 'ca.key'} is not a key made by comtunnel")
    return cert, key
