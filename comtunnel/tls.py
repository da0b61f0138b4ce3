"""TLS contexts for the tunnel (TLS 1.3 only, mutual authentication) and readable TLS failures.

Why TLS 1.3 only: fewer round trips on connect, no legacy cipher choices to get wrong. The hub
requires a client certificate signed by its CA; the client checks the hub's certificate against
the same CA *and* the host name it dialled.

The files are checked here, by a handshake with themselves in memory: a key that does not match
its certificate, a certificate from another ``certs init`` run, an expired one or a hub
certificate used as a client's would otherwise surface only as an obscure handshake failure on
the *other* machine. Each such problem is a :class:`CertificateError` naming the file and the
command that fixes it. Only then is cryptography imported, to say which it is: a hub or client
that starts well never loads it (about 10 MiB per process).

OpenSSL's handshake errors are precise but cryptic, and in TLS 1.3 a client learns that the hub
refused its certificate only from an alert after its own handshake finished. :func:`describe_tls_error`
turns what each side actually sees (verify codes, alert reasons, EOFs, resets) into a sentence
a user can act on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comtunnel.certnames import check_client_name
from comtunnel.errors import CertificateError

if TYPE_CHECKING:
    from cryptography import x509


def hub_context(certs_dir: Path) -> ssl.SSLContext:
    """Server side: hub.crt/hub.key, and every client must present a certificate signed by ca.crt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    hint = f"create them with: comtunnel certs init {certs_dir} --hub-name NAME"
    _load(context, certs_dir, "hub", True, hint)
    context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0  # clients never resume sessions; don't send them tickets they will ignore
    return context


def client_context(certs_dir: Path, name: str) -> ssl.SSLContext:
    """Client side: NAME.crt/NAME.key; the hub must be signed by ca.crt and match the dialled name."""
    check_client_name(name)  # NAME becomes a file name: refuse '../x' before touching the disk
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    hint = f"create them with: comtunnel certs client {certs_dir} {name}"
    _load(context, certs_dir, name, False, hint)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_relay_context(certs_dir: Path, name: str, relay_ca: Path | None = None) -> ssl.SSLContext:
    """The client's leg to a relay: NAME.crt, so the relay admits it, and the relay verified by the
    name dialled, against ``relay_ca`` when given (a relay run under a CA of its own), else ca.crt.

    A separate context, because the inner, end-to-end session must never trust the relay's CA: a
    relay certificate would then pass for a hub's, and the relay could read the session."""
    context = client_context(certs_dir, name)  # NAME's files checked, with their messages
    if relay_ca is None:
        return context
    leg = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    leg.minimum_version = ssl.TLSVersion.TLSv1_3
    leg.load_cert_chain(str(certs_dir / f"{name}.crt"), str(certs_dir / f"{name}.key"), password=_no_passphrase)
    try:
        leg.load_verify_locations(cafile=str(relay_ca))
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"--relay-ca {relay_ca}: not a readable PEM CA file ({exc})") from None
    return leg


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
    _load(for_clients, certs_dir, "relay", True, hint)
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
    return _common_name(verified)


def _common_name(cert: dict[str, Any]) -> str:
    """The subject's common name from ``getpeercert()``'s dict (read by OpenSSL, no cryptography)."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "?"


def _alt_names(cert: dict[str, Any]) -> list[str]:
    """DNS names and IP addresses from ``getpeercert()``'s dict, written as ipaddress writes them."""
    names = []
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            names.append(str(value))
        elif kind == "IP Address":
            names.append(str(ipaddress.ip_address(str(value).strip())))
    return names


# --- loading and checking the files ---------------------------------------------------------------


def _load(context: ssl.SSLContext, certs_dir: Path, stem: str, server: bool, hint: str) -> None:
    """Load and check the files with OpenSSL alone; only a failure imports cryptography, to say why.

    A TLS handshake in memory, between the certificate and key and a peer trusting only ca.crt,
    proves what a user could get wrong: the key belongs to the certificate, ca.crt signed it, it has
    not expired, and it is for the right side (OpenSSL checks the extended key usage).
    """
    if not certs_dir.is_dir():
        raise CertificateError(f"certificate directory {certs_dir} does not exist ({hint})")
    ca_path, cert_path, key_path = certs_dir / "ca.crt", certs_dir / f"{stem}.crt", certs_dir / f"{stem}.key"
    for path in (ca_path, cert_path, key_path):
        if not path.exists():
            raise CertificateError(f"{path} not found ({hint})")
    ca = _read(ca_path).decode("ascii", errors="replace")
    try:
        context.load_verify_locations(cadata=ca)
        # The callback only runs for an encrypted key; it stops OpenSSL prompting on a tty.
        context.load_cert_chain(str(cert_path), str(key_path), password=_no_passphrase)
        refused = _self_handshake(ca, cert_path, key_path, server)
    except (ssl.SSLError, OSError, CertificateError) as exc:
        refused = exc
    if isinstance(refused, ssl.SSLCertVerificationError) and refused.verify_code == _NOT_YET_VALID:
        # Not an error: this machine's clock is more likely behind, and the peer's may be right.
        refused = None
    if refused is not None:
        _explain(ca_path, cert_path, key_path, server, hint)
        raise CertificateError(f"OpenSSL cannot use {cert_path} with {key_path}: {_openssl_reason(refused)}")
    context.minimum_version = ssl.TLSVersion.TLSv1_3


def _self_handshake(ca: str, cert_path: Path, key_path: Path, server: bool) -> BaseException | None:
    """Present the certificate to a peer that trusts only ``ca``, in memory; the peer's refusal, or None.

    The peer checks it as it would in the tunnel: a client checks a hub's certificate (without a
    host name), a hub a client's. A hub needs a certificate of its own to shake hands at all, so the
    peer checking a client's certificate presents that same one, which nothing checks.
    """
    ours = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ours.load_cert_chain(str(cert_path), str(key_path), password=_no_passphrase)
    peer = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if server else ssl.PROTOCOL_TLS_SERVER)
    peer.load_verify_locations(cadata=ca)
    peer.check_hostname = False
    peer.verify_mode = ssl.CERT_REQUIRED
    if not server:
        peer.load_cert_chain(str(cert_path), str(key_path), password=_no_passphrase)
        ours.check_hostname = False
        ours.verify_mode = ssl.CERT_NONE
    for side in (ours, peer):
        side.minimum_version = ssl.TLSVersion.TLSv1_3
    ours_in, ours_out, peer_in, peer_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_first = not server  # the client side speaks first
    sides = [
        (ours.wrap_bio(ours_in, ours_out, server_side=server), ours_out, peer_in),
        (peer.wrap_bio(peer_in, peer_out, server_side=not server), peer_out, ours_in),
    ]
    if not client_first:
        sides.reverse()
    done = [False, False]
    for _ in range(8):  # a TLS 1.3 handshake takes three flights
        for i, (tls, out, into) in enumerate(sides):
            if not done[i]:
                try:
                    tls.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    return exc
            into.write(out.read())
        if all(done):
            return None
    return ssl.SSLError("the handshake with itself did not finish")


def _openssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).lower().replace("_", " ")
    return str(exc)


def _explain(ca_path: Path, cert_path: Path, key_path: Path, server: bool, hint: str) -> None:
    """Raise the CertificateError saying what is wrong with the files OpenSSL refused, if cryptography
    can tell (it names the file and the command that fixes it); return if it finds nothing."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

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
    expiry = cert.not_valid_after_utc
    if expiry < dt.datetime.now(dt.UTC):
        raise CertificateError(f"{cert_path} expired on {expiry:%Y-%m-%d} (make a new one; {hint})")
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no EKU means any use, for OpenSSL too
    if usage not in usages:
        wanted = "hub (server)" if server else "client"
        raise CertificateError(f"{cert_path} is not a {wanted} certificate: the hub uses hub.crt, a client NAME.crt")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_cert(path: Path) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None


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
    cert = ssl_object.getpeercert()  # our peers' certificates are always verified, so this is filled in
    text = f"{ssl_object.version()} {cipher[0] if cipher else '?'}"
    if der and cert:
        names = ", ".join(_alt_names(cert)) or "none"
        fingerprint = hashlib.sha256(der).digest().hex(":").upper()
        until = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), dt.UTC)
        text += (
            f"; certificate {_common_name(cert)!r} (SANs: {names}; serial {int(str(cert['serialNumber']), 16):x}; "
            f"until {until:%Y-%m-%d}; SHA-256 {fingerprint[:23]}...)"
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
