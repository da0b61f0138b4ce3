"""Certificates for mutual TLS: one private CA, a hub certificate, one certificate per client.

Why a private CA: the hub must know *which* client connects (names appear in logs and, later,
access rules) and clients must trust only their own hubs, never the public web PKI. EC P-256
keys keep generation instant and handshakes fast.

Layout of a certificate directory (see certs/README.md for which file goes to which machine)::

    ca.crt  ca.key          the CA; ca.key signs new clients and should then live offline
                            (encrypted with a passphrase if one is given: --ca-passphrase-file)
    hub.crt hub.key         CN = first hub name, SAN = every hub name, EKU serverAuth
                            (`certs hub` replaces them with new names; clients stay valid)
    NAME.crt NAME.key       one per client, CN = NAME, EKU clientAuth
    crl.pem                 the revocation list `certs revoke` writes

Every file goes through :func:`_write_file`: a fresh temporary file beside the target, created
exclusively and without following symlinks, with its final mode from the start (0600 for keys: never
chmod after writing, which would leave a window where they are readable), then renamed into place, so
a crash never leaves half a file. A target that is itself a symlink is refused rather than followed:
writing through it could plant a certificate, or a key, wherever it points. Nothing is overwritten
unless asked: replacing a CA silently would lock out every machine that has the old one.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from comtunnel.certinfo import revoked_serials, why
from comtunnel.certnames import CRL_FILE, RESERVED, check_client_name
from comtunnel.errors import CertificateError, UsageError

# Keys that may sign: ours are EC, but a CA brought from elsewhere may be any of these.
IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
_ISSUER_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)

MAX_DAYS = 36500  # X.509 dates end in 9999; a century is plenty and keeps datetime arithmetic safe

# RFC 1123 labels, plus '_' (seen on real LANs) and a leading '*.' wildcard.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(\*\.)?({_LABEL}\.)*{_LABEL}\.?")

PASSPHRASE_ENV = "COMTUNNEL_CA_PASSPHRASE"
_PASSPHRASE_HINT = f"give it with --ca-passphrase-file FILE or ${PASSPHRASE_ENV}, or run this on a terminal to be asked"
_KEY_MODE, _PUBLIC_MODE = 0o600, 0o644


def ca_passphrase(file: str | Path | None) -> bytes | None:
    """The CA key's passphrase: the first line of ``file``, else ``$COMTUNNEL_CA_PASSPHRASE``, else None.

    None means "not given": ``init`` then writes ca.key unencrypted, and loading an encrypted ca.key
    asks on the terminal. An empty passphrase is refused rather than taken as "no encryption".
    """
    if file is not None:
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the passphrase file {file}: {why(exc)}") from None
        passphrase = data.split(b"\n", 1)[0].rstrip(b"\r")  # the first line, as openssl's -passin file:
        if not passphrase:
            raise UsageError(f"the passphrase file {file} is empty (its first line is the passphrase)")
        return passphrase
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        return None
    if not value:
        raise UsageError(f"${PASSPHRASE_ENV} is set but empty; unset it or give the passphrase")
    return value.encode()


def init_certs(
    directory: Path,
    hub_names: list[str],
    clients: list[str],
    *,
    days: int = 3650,
    overwrite: bool = False,
    ca_passphrase: bytes | None = None,
) -> list[Path]:
    """Create ca.*, hub.* and NAME.* for each client in ``directory``; return the files written.

    Every argument is checked before anything is written, so a typo never leaves a half-made set.
    With ``overwrite`` the CA is replaced: certificates from the old CA (including clients not
    named here) stop working. With ``ca_passphrase`` ca.key is encrypted with it.
    """
    sans = [_san(name) for name in hub_names]
    if not sans:
        raise UsageError("give at least one --hub-name (the DNS name or IP address clients connect to)")
    _check_days(days)
    if ca_passphrase is not None and not ca_passphrase:
        raise UsageError("an empty CA passphrase would not protect ca.key; give a real one, or none")
    for name in clients:
        check_client_name(name)
    if len(set(clients)) != len(clients):
        raise UsageError("a client name is given twice")
    stems = ["ca", "hub", *clients]
    _refuse_symlinks(directory / f"{stem}{ext}" for stem in stems for ext in (".crt", ".key"))
    if not overwrite:
        _refuse_existing(directory, stems)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the certificate directory {directory}: {why(exc)}") from None
    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A distinct CA name per run: two comtunnel CAs are told apart in `openssl x509 -text` and by OpenSSL.
    ca_name = _name(f"comtunnel CA {secrets.token_hex(4)}")
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
        _write_key(directory / "ca.key", ca_key, ca_passphrase),
        _write_cert(directory / "ca.crt", ca_cert),
    ]
    written += _issue(directory, "hub", hub_names[0], ca_cert, ca_key, days, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    for name in clients:
        written += _issue(directory, name, name, ca_cert, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return written


def add_client(directory: Path, name: str, *, days: int = 3650, ca_passphrase: bytes | None = None) -> list[Path]:
    """Sign a certificate for a new client with the CA already in ``directory``; return the files written.

    ``ca_passphrase`` unlocks an encrypted ca.key (without it, one is asked for on a terminal).
    """
    check_client_name(name)
    _check_days(days)
    targets = (directory / f"{name}.crt", directory / f"{name}.key")
    _refuse_symlinks(targets)
    ca_cert, ca_key = _load_ca(directory, ca_passphrase)
    existing = [p for p in targets if p.exists()]
    if existing:
        raise UsageError(f"client {name!r} already exists in {directory} ({existing[0].name}); pick another name")
    return _issue(directory, name, name, ca_cert, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def replace_hub(
    directory: Path, hub_names: list[str], *, days: int = 3650, ca_passphrase: bytes | None = None
) -> list[Path]:
    """A new hub.crt/hub.key for ``hub_names``, signed by the CA already in ``directory``.

    Client certificates stay valid: they are signed by the same CA, which is not touched. Each file is
    replaced atomically (written beside it, renamed over it); the key goes first, so a crash in between
    leaves a key that does not match hub.crt, which the hub reports at start, never a stale pair.
    """
    sans = [_san(name) for name in hub_names]
    if not sans:
        raise UsageError("give at least one --hub-name (the DNS name or IP address clients connect to)")
    if len(set(sans)) != len(sans):
        raise UsageError("a hub name is given twice")
    _check_days(days)
    _refuse_shared_names(sans, directory / "relay.crt", "the relay's certificate", "a hub")
    _refuse_symlinks([directory / "hub.crt", directory / "hub.key"])
    ca_cert, ca_key = _load_ca(directory, ca_passphrase)
    return _issue(directory, "hub", hub_names[0], ca_cert, ca_key, days, ExtendedKeyUsageOID.SERVER_AUTH, sans)


def issue_relay(
    directory: Path, relay_names: list[str], *, days: int = 3650, ca_passphrase: bytes | None = None
) -> list[Path]:
    """relay.crt/relay.key for ``relay_names`` (the names hubs and clients dial), signed by the CA
    in ``directory``. A server certificate like the hub's: clients check it by the name they dial.
    Give the relay names no hub has: a client verifying a hub by a relay name would accept the relay."""
    sans = [_san(name) for name in relay_names]
    if not sans:
        raise UsageError("give at least one --relay-name (the DNS name or IP address hubs and clients dial)")
    if len(set(sans)) != len(sans):
        raise UsageError("a relay name is given twice")
    _check_days(days)
    _refuse_shared_names(sans, directory / "hub.crt", "the hub's certificate", "a relay")
    _refuse_symlinks([directory / "relay.crt", directory / "relay.key"])
    ca_cert, ca_key = _load_ca(directory, ca_passphrase)
    return _issue(directory, "relay", relay_names[0], ca_cert, ca_key, days, ExtendedKeyUsageOID.SERVER_AUTH, sans)


def revoke(directory: Path, name: str, *, ca_passphrase: bytes | None = None) -> tuple[Path, int]:
    """Add client NAME's certificate to DIR/crl.pem (signed by the CA); return the CRL path and serial.

    A standard X.509 CRL, so other tools (openssl crl) can read it; earlier entries are kept.
    ``ca_passphrase`` unlocks an encrypted ca.key, as for :func:`add_client`.
    """
    check_client_name(name)
    crl_path = directory / CRL_FILE
    _refuse_symlinks([crl_path])
    ca_cert, ca_key = _load_ca(directory, ca_passphrase)
    cert_path = directory / f"{name}.crt"
    if not cert_path.exists():
        known = sorted(p.stem for p in directory.glob("*.crt") if p.stem not in RESERVED)
        raise UsageError(f"no certificate {cert_path} (clients here: {', '.join(known) or 'none'})")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, OSError) as exc:
        raise CertificateError(f"cannot read {cert_path}: {why(exc)}") from None
    if cert.issuer != ca_cert.subject:
        raise CertificateError(f"{cert_path} was not issued by {directory / 'ca.crt'}")
    entries = list(revoked_serials(crl_path, ca_cert).items())
    now = dt.datetime.now(dt.UTC)
    if cert.serial_number not in dict(entries):
        entries.append((cert.serial_number, now))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=MAX_DAYS))
    )
    for serial, when in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(
        ca_key, None if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    )
    # Renamed into place: a hub reloading it never sees half a file.
    _write_file(crl_path, crl.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE)
    return crl_path, cert.serial_number


# --- internals ----------------------------------------------------------------------------------


def _refuse_shared_names(sans: list[x509.GeneralName], other: Path, what: str, role: str) -> None:
    """A hub and a relay of one CA must not share a name: a client checks the hub, inside the
    relay's session, only by name, so a relay holding the hub's name could pose as the hub."""
    try:
        cert = x509.load_pem_x509_certificate(other.read_bytes())
        held = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return  # no such certificate here (yet): nothing to clash with
    shared = [str(san.value) for san in sans if san in held]
    if shared:
        raise UsageError(
            f"{', '.join(shared)} is already a name in {what} ({other}); give {role} other names, "
            "or the relay could pose as the hub"
        )


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise UsageError(f"certificate lifetime must be 1 to {MAX_DAYS} days, not {days}")


def _refuse_symlinks(paths: Iterable[Path]) -> None:
    """Refuse before anything is written, so a symlink among the targets never leaves a half-made set."""
    for path in paths:
        _refuse_symlink(path)


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():  # dangling or not: lstat, never followed
        raise UsageError(f"{path} is a symlink; refusing to write through it (remove it, or write elsewhere)")


def _refuse_existing(directory: Path, stems: list[str]) -> None:
    if (directory / "ca.crt").exists() or (directory / "ca.key").exists():
        raise UsageError(
            f"{directory} already holds a CA; use --force to replace it (certificates from the old CA stop working)"
        )
    taken = [f"{s}{ext}" for s in stems for ext in (".crt", ".key") if (directory / f"{s}{ext}").exists()]
    if taken:
        raise UsageError(f"{directory} already holds {', '.join(taken)}; use --force to replace them")


def _san(name: str) -> x509.GeneralName:
    """An IP SAN for an address, else a DNS SAN (IDNs as A-labels, which is what TLS compares)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        ascii_name = ""
    if len(ascii_name) > 253 or not _DNS_NAME.fullmatch(ascii_name):
        raise UsageError(
            f"hub name {name!r} is neither a DNS name nor an IP address (give the host name alone, without a port)"
        )
    return x509.DNSName(ascii_name)


def _name(common_name: str) -> x509.Name:
    # X.509 caps a CN at 64 characters; a longer hub name still matches through its SAN.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


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
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew between machines
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _issue(
    directory: Path,
    filename: str,
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: IssuerKey,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> list[Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    # Ed25519/Ed448 issuers sign without a separate hash; comtunnel's own CAs are EC.
    hashless = isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    cert = builder.sign(ca_key, None if hashless else hashes.SHA256())
    return [_write_key(directory / f"{filename}.key", key), _write_cert(directory / f"{filename}.crt", cert)]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if passphrase is None else serialization.BestAvailableEncryption(passphrase)
    )
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return _write_file(path, data, _KEY_MODE)


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    return _write_file(path, cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE)


def _write_file(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to ``path`` with ``mode``, never through a symlink, atomically.

    The temporary file PATH.tmp is created with O_EXCL|O_NOFOLLOW (so neither a file nor a symlink
    planted there is opened) and its final mode from the start (umask can only narrow it); then it
    is renamed over ``path``, which replaces a file there but never follows a symlink. A symlink
    already at ``path`` is refused.
    """
    _refuse_symlink(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # left by a crash; unlinking a symlink never touches its target
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {why(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {why(exc)}") from None
    return path


def _load_ca(directory: Path, passphrase: bytes | None = None) -> tuple[x509.Certificate, IssuerKey]:
    init_hint = f"create a CA first with 'comtunnel certs init {directory} --hub-name NAME'"
    if not directory.is_dir():
        raise CertificateError(f"certificate directory {directory} does not exist: {init_hint}")
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    for path in (cert_path, key_path):
        if not path.exists():
            where = " (ca.key is needed to sign clients: run this where the CA key is kept)" if path == key_path else ""
            raise CertificateError(f"{path} not found{where}; or {init_hint}")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, OSError) as exc:
        raise CertificateError(f"cannot read {cert_path}: {why(exc)}") from None
    try:
        pem = key_path.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # encrypted
        key = _decrypt_key(key_path, pem, passphrase)
    except (ValueError, OSError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"cannot read {key_path}: {why(exc)}") from None
    if not isinstance(key, _ISSUER_KEYS) or key.public_key() != cert.public_key():
        raise CertificateError(f"{key_path} does not belong to {cert_path} (are they from the same 'certs init'?)")
    return cert, key


def _decrypt_key(key_path: Path, pem: bytes, passphrase: bytes | None) -> PrivateKeyTypes:
    """An encrypted key, with the given passphrase or, on a terminal, one typed in."""
    if passphrase is None:
        if sys.stdin is None or not sys.stdin.isatty():
            raise CertificateError(f"{key_path} is encrypted and no passphrase was given: {_PASSPHRASE_HINT}")
        try:
            passphrase = getpass.getpass(f"passphrase for {key_path}: ").encode()
        except EOFError:
            passphrase = b""
        if not passphrase:
            raise CertificateError(f"no passphrase typed for {key_path}")
    try:
        return serialization.load_pem_private_key(pem, password=passphrase)
    except ValueError:
        raise CertificateError(f"wrong passphrase for {key_path}") from None
    except UnsupportedAlgorithm as exc:
        raise CertificateError(f"cannot read {key_path}: {why(exc)}") from None
