"""TLS contexts for the tunnel (TLS 1.3 only, mutual authentication) and readable TLS failures.

Why TLS 1.3 only: fewer round trips on connect, no legacy cipher choices to get wrong. The hub
requires a client certificate signed by its CA; the client checks the hub's certificate against
the same CA *and* the host name it dialled. OpenSSL's errors are precise but cryptic, so
:func:`describe_tls_error` turns the common ones into a sentence a user can act on.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from comtunnel.errors import CertificateError


def _base(purpose: ssl.Purpose, certs_dir: Path, cert: str, key: str, hint: str) -> ssl.SSLContext:
    ca = certs_dir / "ca.crt"
    for path in (ca, certs_dir / cert, certs_dir / key):
        if not path.is_file():
            raise CertificateError(f"{path} not found ({hint})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_verify_locations(cafile=str(ca))
        context.load_cert_chain(str(certs_dir / cert), str(certs_dir / key))
    except ssl.SSLError as exc:
        raise CertificateError(
            f"cannot use {certs_dir / cert} with {certs_dir / key}: {exc.reason or exc} (do they belong together?)"
        ) from None
    except OSError as exc:
        raise CertificateError(f"cannot read certificates in {certs_dir}: {exc}") from None
    return context


def hub_context(certs_dir: Path) -> ssl.SSLContext:
    context = _base(
        ssl.Purpose.CLIENT_AUTH,
        certs_dir,
        "hub.crt",
        "hub.key",
        f"create them with: comtunnel certs init {certs_dir} --hub-name NAME",
    )
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(certs_dir: Path, name: str) -> ssl.SSLContext:
    context = _base(
        ssl.Purpose.SERVER_AUTH,
        certs_dir,
        f"{name}.crt",
        f"{name}.key",
        f"create them with: comtunnel certs client {certs_dir} {name}",
    )
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_name(ssl_object: Any) -> str | None:
    """Common name of the verified peer certificate, or None."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


# OpenSSL reason -> what it means for a comtunnel user; {peer} is "hub" or "client".
_REASONS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the hub requires a client certificate and we sent none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the {peer} rejected our certificate: it is not signed by the {peer}'s CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the {peer} rejected our certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "our certificate has been revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the {peer} says our certificate has expired",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the {peer} does not speak TLS 1.3",
    "UNSUPPORTED_PROTOCOL": "the {peer} does not speak TLS 1.3",
    "WRONG_VERSION_NUMBER": "the {peer} is not speaking TLS (wrong port, or a plaintext client?)",
    "HTTP_REQUEST": "the {peer} is not speaking TLS (an HTTP request)",
    "RECORD_LAYER_FAILURE": "the {peer} is not speaking TLS",
    "PACKET_LENGTH_TOO_LONG": "the {peer} is not speaking TLS",
    "UNEXPECTED_EOF_WHILE_READING": "the {peer} closed the connection during the TLS handshake",
}


def describe_tls_error(exc: BaseException | None, peer: str = "hub") -> str:
    """One line, for logs and CLI errors, saying what went wrong in terms a user can act on.

    ``peer`` names the other side ("hub" when we are the client, "client" on the hub).
    """
    if exc is None:
        return f"the {peer} closed the connection"
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or str(exc)
        if "Hostname mismatch" in message or "IP address mismatch" in message:
            return f"hostname mismatch: the {peer}'s certificate is not for this address ({message})"
        if "unable to get local issuer" in message or "self-signed" in message or "self signed" in message:
            return f"the {peer}'s certificate is not signed by our CA (another CA, or the wrong certs directory?)"
        if "expired" in message:
            return f"the {peer}'s certificate has expired"
        return f"the {peer}'s certificate was rejected: {message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _REASONS:
            return _REASONS[reason].format(peer=peer)
        return f"TLS error: {reason or exc}"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused (is the {peer} running, and is this its address?)"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by the {peer}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
