"""TLS contexts for the tunnel (TLS 1.3 only, mutual authentication) and readable TLS failures.

Why TLS 1.3 only: fewer round trips on connect, no legacy cipher choices to get wrong. The hub
requires a client certificate signed by its CA; the client checks the hub's certificate against
the same CA *and* the host name it dialled.

The files are checked here, with cryptography, before OpenSSL sees them: a key that does not
match its certificate, a certificate from another ``certs init`` run, an expired one or a hub
certificate used as a client's would otherwise surface only as an obscure handshake failure on
the *other* machine. Each such problem is a :class:`CertificateError` naming the file and the
command that fixes it.

OpenSSL's handshake errors are precise but cryptic, and in TLS 1.3 a client learns that the hub
refused its certificate only from an alert after its own handshake finished. :func:`describe_tls_error`
turns what each side actually sees (verify codes, alert reasons, EOFs, resets) into a sentence
a user can act on.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from comtunnel.certinfo import certificate_name
from comtunnel.certs import check_client_name
from comtunnel.errors import CertificateError


def hub_context(certs_dir: Path) -> ssl.SSLContext:
    """Server side: hub.crt/hub.key, and every client must present a certificate signed by ca.crt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    hint = f"create them with: comtunnel certs init {certs_dir} --hub-name NAME"
    _load(context, certs_dir, "hub", ExtendedKeyUsageOID.SERVER_AUTH, hint)
    context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0  # clients never resume sessions; don't send them tickets they will ignore
    return context


def client_context(certs_dir: Path, name: str) -> ssl.SSLContext:
    """Client side: NAME.crt/NAME.key; the hub must be signed by ca.crt and match the dialled name."""
    check_client_name(name)  # NAME becomes a file name: refuse '../x' before touching the disk
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    hint = f"create them with: comtunnel certs client {certs_dir} {name}"
    _load(context, certs_dir, name, ExtendedKeyUsageOID.CLIENT_AUTH, hint)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def hub_relay_context(certs_dir: Path) -> ssl.SSLContext:
    """The hub's side of its connections to a relay: the TLS server with hub.crt, so the relay can
    read the hub's names from a verified certificate. The relay itself is not asked for one: it
    is trusted with nothing (the hub-client session inside is end to end), and a fake relay could
    do no more than a network that drops packets."""
    context = hub_context(certs_dir)
    context.verify_mode = ssl.CERT_NONE
    return context


def relay_contexts(certs_dir: Path, relay_ca: Path | None = None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The relay's two contexts: towards clients the TLS server (relay.crt/relay.key, a client
    certificate required), towards hubs the TLS client (the hub's certificate verified, but not
    for a host name: its names are what the relay registers it under). Both trust ca.crt and,
    with ``relay_ca``, the CAs in that file too."""
    hint = f"create them with: comtunnel certs relay {certs_dir} --relay-name NAME"
    for_clients = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(for_clients, certs_dir, "relay", ExtendedKeyUsageOID.SERVER_AUTH, hint)
    for_clients.verify_mode = ssl.CERT_REQUIRED
    for_clients.num_tickets = 0
    for_hubs = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for_hubs.check_hostname = False
    for_hubs.verify_mode = ssl.CERT_REQUIRED
    for_hubs.minimum_version = ssl.TLSVersion.TLSv1_3
    for_hubs.load_verify_locations(cafile=str(certs_dir / "ca.crt"))
    if relay_ca is not None:
        for context in (for_clients, for_hubs):
            try:
                context.load_verify_locations(cafile=str(relay_ca))
            except (ssl.SSLError, OSError) as exc:
                raise CertificateError(f"--relay-ca {relay_ca}: not a readable PEM CA file ({exc})") from None
    return for_clients, for_hubs


def names_probe_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """A client context trusting exactly ``context``'s CAs, checking the chain but not the host name.

    Only for reading which names a hub's certificate holds after a hostname mismatch (to say so in
    the error): what it reads is verified against the same CA, and nothing is sent over it.
    """
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_REQUIRED
    probe.minimum_version = ssl.TLSVersion.TLSv1_3
    cas = context.get_ca_certs(binary_form=True)
    if cas:
        probe.load_verify_locations(cadata=b"".join(cas))
    return probe


def is_name_mismatch(exc: BaseException | None) -> bool:
    """Whether the peer's certificate was refused only because it is not valid for the dialled name."""
    if not isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return exc.verify_code in _NAME_MISMATCH or "mismatch" in str(exc.verify_message or exc)


def peer_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """Common name of the verified peer certificate, or None (no TLS, no handshake yet, no certificate)."""
    if ssl_object is None:
        return None
    try:
        verified = ssl_object.getpeercert()  # empty unless the certificate was verified
        der = ssl_object.getpeercert(binary_form=True)
    except ValueError:  # handshake not done
        return None
    if not verified or not der:
        return None
    try:
        return certificate_name(der)
    except CertificateError:
        return None


# --- loading and checking the files ---------------------------------------------------------------


def _load(context: ssl.SSLContext, certs_dir: Path, stem: str, usage: x509.ObjectIdentifier, hint: str) -> None:
    if not certs_dir.is_dir():
        raise CertificateError(f"certificate directory {certs_dir} does not exist ({hint})")
    ca_path, cert_path, key_path = certs_dir / "ca.crt", certs_dir / f"{stem}.crt", certs_dir / f"{stem}.key"
    for path in (ca_path, cert_path, key_path):
        if not path.exists():
            raise CertificateError(f"{path} not found ({hint})")
    ca = _read_cert(ca_path)
    cert = _read_cert(cert_path)
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except TypeError:
        raise CertificateError(f"{key_path} is encrypted; comtunnel needs keys without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{key_path} is not a PEM private key ({hint})") from None
    if key.public_key() != cert.public_key():
        raise CertificateError(f"{key_path} does not belong to {cert_path}: copy both files from the same 'certs' run")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            f"{cert_path} is not signed by {ca_path}: they come from different 'comtunnel certs init' runs"
        ) from None
    _check_dates(cert, cert_path, hint)
    _check_usage(cert, cert_path, usage)
    try:
        context.load_verify_locations(cafile=str(ca_path))
        # The callback only runs for an encrypted key (refused above); it stops OpenSSL prompting on a tty.
        context.load_cert_chain(str(cert_path), str(key_path), password=_no_passphrase)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"OpenSSL cannot use {cert_path} with {key_path}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None


def _check_dates(cert: x509.Certificate, path: Path, hint: str) -> None:
    # Only expiry: a "not yet valid" certificate more likely means this machine's clock is behind,
    # and the peer, whose clock may be right, will accept it.
    expiry = cert.not_valid_after_utc
    if expiry < dt.datetime.now(dt.UTC):
        raise CertificateError(f"{path} expired on {expiry:%Y-%m-%d} (make a new one; {hint})")


def _check_usage(cert: x509.Certificate, path: Path, usage: x509.ObjectIdentifier) -> None:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no EKU means any use, for OpenSSL too
    if usage not in usages:
        wanted = "hub (server)" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "client"
        raise CertificateError(f"{path} is not a {wanted} certificate: the hub uses hub.crt, a client NAME.crt")


def _no_passphrase() -> bytes:
    raise CertificateError("encrypted keys are not supported")


# --- describing failures ------------------------------------------------------------------------------

# X509_V_ERR_* codes from OpenSSL's x509_vfy.h: we refused the peer's certificate.
_NOT_OUR_CA = {2, 7, 18, 19, 20, 21}  # no issuer / bad signature / self-signed: another CA
_NOT_YET_VALID, _EXPIRED, _REVOKED, _WRONG_PURPOSE = 9, 10, 23, 26
_NAME_MISMATCH = {62, 64}  # host name, IP address

# OpenSSL reasons: the peer refused us (alerts), or the bytes were not TLS. {peer} is "hub" or "client".
_REJECTED = "the {peer} rejected our certificate"
_NOT_TLS = "the {peer} is not speaking TLS (wrong port, or not a comtunnel {peer}?)"
_VERSION = "TLS version mismatch with the {peer} (comtunnel speaks TLS 1.3 only)"
_REASONS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the hub requires a client certificate and we sent none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate",
    "TLSV1_ALERT_UNKNOWN_CA": _REJECTED + ": it is not signed by the {peer}'s CA (unknown CA)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": _REJECTED + " as expired or not yet valid (check the clocks on both machines)",
    "SSLV3_ALERT_BAD_CERTIFICATE": _REJECTED + " (the {peer}'s log says why: often a host name or clock problem)",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": _REJECTED + " as the wrong kind (a client certificate on the hub?)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": _REJECTED + " as revoked",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": _REJECTED,
    "TLSV1_ALERT_DECRYPT_ERROR": _REJECTED + " (signature check failed)",
    "TLSV1_ALERT_PROTOCOL_VERSION": _VERSION,
    "UNSUPPORTED_PROTOCOL": _VERSION,
    "NO_PROTOCOLS_AVAILABLE": _VERSION,
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "HTTP_REQUEST": "the {peer} is not speaking TLS (it sent an HTTP request)",
    "HTTPS_PROXY_REQUEST": "the {peer} is not speaking TLS (it sent an HTTP proxy request)",
    "UNKNOWN_PROTOCOL": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": _NOT_TLS,
}


def describe_session(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The TLS version and cipher, and the peer's certificate: names, expiry, fingerprint (for -v)."""
    if ssl_object is None:
        return "no TLS"
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    text = f"{ssl_object.version()} {cipher[0] if cipher else '?'}"
    if der:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        from comtunnel.certinfo import certificate_name, subject_alt_names

        cert = x509.load_der_x509_certificate(der)
        names = ", ".join(subject_alt_names(cert)) or "none"
        fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
        text += (
            f"; certificate {certificate_name(cert)!r} (SANs: {names}; serial {cert.serial_number:x}; "
            f"until {cert.not_valid_after_utc:%Y-%m-%d}; SHA-256 {fingerprint[:23]}...)"
        )
    return text


def describe_tls_error(exc: BaseException | None, peer: str = "hub", *, peer_names: Sequence[str] = ()) -> str:
    """One line, for logs and CLI errors, saying what went wrong in terms a user can act on.

    ``peer`` names the other side: "hub" when we are the client, "client" on the hub. ``None``
    means the connection ended without an error. ``peer_names``, when known, are the names the
    peer's certificate holds: a hostname mismatch then lists them.
    """
    if exc is None:
        return f"the {peer} closed the connection"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _describe_verify_error(exc, peer, peer_names)
    if isinstance(exc, ssl.SSLEOFError):
        # TLS 1.3: a hub refusing our certificate may close before its alert reaches us.
        rejected = "; if it refused our certificate, its log says why" if peer == "hub" else ""
        return f"the {peer} closed the connection unexpectedly{rejected}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _REASONS:
            return _REASONS[reason].format(peer=peer)
        detail = reason.lower().replace("_", " ") if reason else re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
        return f"TLS error with the {peer}: {detail}"
    return _describe_os_error(exc, peer)


def _describe_verify_error(exc: ssl.SSLCertVerificationError, peer: str, peer_names: Sequence[str]) -> str:
    message = str(exc.verify_message or exc)
    code = exc.verify_code
    if is_name_mismatch(exc):
        dialled = re.search(r"not valid for '([^']*)'", message)
        target = repr(dialled.group(1)) if dialled else "the address we dialled"
        if peer_names:
            # `certs hub` replaces the certificate: the command keeps the names it holds and adds ours.
            wanted = [*peer_names, dialled.group(1) if dialled else "NAME"]
            command = "comtunnel certs hub DIR" + "".join(f" --hub-name {name}" for name in wanted)
            return (
                f"hostname mismatch: the {peer}'s certificate is not valid for {target}; it holds: "
                f"{', '.join(peer_names)}. Connect with one of those, or add the name where the CA is kept: "
                f"'{command}'"
            )
        return (
            f"hostname mismatch: the {peer}'s certificate is not valid for {target} "
            "(connect with a name given to --hub-name, or make a new hub certificate)"
        )
    if code in _NOT_OUR_CA:
        return f"the {peer}'s certificate is not signed by our CA (another 'certs init', or the wrong certs directory?)"
    if code == _EXPIRED:
        return f"the {peer}'s certificate has expired (or this machine's clock is ahead)"
    if code == _NOT_YET_VALID:
        return f"the {peer}'s certificate is not valid yet: check the clocks on both machines"
    if code == _REVOKED:
        return f"the {peer}'s certificate has been revoked"
    if code == _WRONG_PURPOSE:
        return f"the {peer}'s certificate is not a {peer} certificate (the hub uses hub.crt, a client NAME.crt)"
    return f"the {peer}'s certificate was rejected: {message}"


def _describe_os_error(exc: BaseException, peer: str) -> str:
    if isinstance(exc, TimeoutError):
        return str(exc) or f"the {peer} did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused (is the {peer} running, and is this its address?)"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        # With an errno this is the kernel's reset; without, an adapter's own sentence.
        return f"connection reset by the {peer}" if exc.errno else str(exc) or f"connection reset by the {peer}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the {peer}'s address: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
