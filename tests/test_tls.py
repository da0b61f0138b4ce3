"""Real TLS on 127.0.0.1 between `hub_context` and `client_context`.

What must connect does (and carries bytes, and names each side); what must be refused is refused,
and `describe_tls_error` gives *both* sides a sentence that says why, from the errors ssl really
raises on each side. After every refusal the same server context serves a good client.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import queue
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import Proc, comtunnel, start_hub

from comtunnel.aio.tls_layer import peer_certificate
from comtunnel.certinfo import subject_alt_names
from comtunnel.certs import init_certs, replace_hub
from comtunnel.errors import CertificateError, UsageError
from comtunnel.tls import (
    client_context,
    describe_session,
    describe_tls_error,
    hub_context,
    is_name_mismatch,
    names_probe_context,
    peer_name,
)

Outcome = str | None | BaseException


class Server:
    """A blocking TLS server thread in the hub's role: one connection at a time, echoes one message
    prefixed with the client's certificate name, and records what each handshake gave the server.

    With ``plain`` instead of a context it hands each raw connection to that function (a server
    that does not speak TLS). After a failed handshake it half-closes and drains before closing,
    so the alert OpenSSL wrote reaches the client instead of being lost to a TCP reset.
    """

    def __init__(self, context: ssl.SSLContext | None, plain: Callable[[socket.socket], None] | None = None) -> None:
        self.context, self.plain = context, plain
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def outcome(self) -> Outcome:
        return self.outcomes.get(timeout=10)

    def failure(self) -> BaseException:
        """The next outcome, which must be a failed handshake."""
        outcome = self.outcome()
        assert isinstance(outcome, BaseException), f"the server accepted: {outcome!r}"
        return outcome

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            raw.settimeout(5)
            try:
                if self.plain is not None:
                    self.plain(raw)
                else:
                    self._handle(raw)
            finally:
                raw.close()

    def _handle(self, raw: socket.socket) -> None:
        assert self.context is not None
        tls = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.outcomes.put(exc)
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_WR)  # drops the SSL layer: reads below are plain
                while tls.recv(4096):
                    pass
            tls.close()
            return
        name = peer_name(tls)
        self.outcomes.put(name)
        try:
            data = tls.recv(100)
            tls.sendall(f"{name}:".encode() + data)
        except (ssl.SSLError, OSError) as exc:
            self.outcomes.put(exc)
        finally:
            tls.close()


@contextlib.contextmanager
def serving(context: ssl.SSLContext | None, plain: Callable[[socket.socket], None] | None = None) -> Iterator[Server]:
    server = Server(context, plain)
    try:
        yield server
    finally:
        server.close()


def exchange(context: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> tuple[bytes, str | None, str | None]:
    """Connect as a client, send b'ping', return (the echo, the hub's name, the TLS version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"ping")
            return tls.recv(100), peer_name(tls), tls.version()


def refused(context: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> BaseException:
    """Connect as a client that must fail; return the exception (handshake, or the alert on first read)."""
    with pytest.raises((ssl.SSLError, OSError)) as info:
        exchange(context, port, host)
    return info.value


# --- certificate sets ------------------------------------------------------------------------------


def plain_client(ca: Path, cert: Path | None = None, *, tls12: bool = False) -> ssl.SSLContext:
    """A client context built by hand, for what `client_context` would refuse to build."""
    context = ssl.create_default_context(cafile=str(ca))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, cert.with_suffix(".key"))
    return context


def sign(certs: Path, out: Path, *, days_from: int, days_to: int, server: bool) -> Path:
    """A certificate signed by `certs`'s CA with chosen dates, written as out(.crt|.key)."""
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, out.name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days_from))
        .not_valid_after(now + dt.timedelta(days=days_to))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out.with_suffix(".crt")


def hub_with(certs: Path, cert: Path) -> ssl.SSLContext:
    context = hub_context(certs)
    context.load_cert_chain(cert, cert.with_suffix(".key"))
    return context


# --- what works ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_handshake_carries_bytes_and_names_both_sides(certs: Path, host: str) -> None:
    with serving(hub_context(certs)) as hub:
        echo, hub_name, version = exchange(client_context(certs, "alice"), hub.port, host)
        assert hub.outcome() == "alice"
        assert echo == b"alice:ping"
        assert hub_name == "127.0.0.1"  # CN = the first hub name; 'localhost' matched through the DNS SAN
        assert version == "TLSv1.3"
        assert exchange(client_context(certs, "bob"), hub.port, host)[0] == b"bob:ping"


def test_contexts_are_tls13_and_mutual(certs: Path) -> None:
    hub, client = hub_context(certs), client_context(certs, "alice")
    assert hub.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_3
    assert hub.verify_mode == client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname


def test_the_session_is_described_from_what_openssl_verified(certs: Path) -> None:
    """describe_session (for -v) reads OpenSSL's view of the peer: the same facts cryptography reads."""
    hub_cert = x509.load_pem_x509_certificate((certs / "hub.crt").read_bytes())
    fingerprint = hub_cert.fingerprint(hashes.SHA256()).hex(":").upper()[:23]
    with serving(hub_context(certs)) as hub:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as raw:
            with client_context(certs, "alice").wrap_socket(raw, server_hostname="localhost") as tls:
                text = describe_session(tls)
                tls.sendall(b"ping")
                assert tls.recv(100) == b"alice:ping"
        assert hub.outcome() == "alice"
    version_and_cipher, certificate = text.split("; ", 1)
    assert re.fullmatch(r"TLSv1\.3 TLS_\w+", version_and_cipher), text
    assert certificate == (
        f"certificate '127.0.0.1' (SANs: {', '.join(subject_alt_names(hub_cert))}; serial {hub_cert.serial_number:x}; "
        f"until {hub_cert.not_valid_after_utc:%Y-%m-%d}; SHA-256 {fingerprint}...)"
    )
    assert describe_session(None) == "no TLS"


def test_a_certificate_not_valid_yet_is_loaded(copy: Path) -> None:
    """More likely this machine's clock is behind; the peer, whose clock may be right, will accept it."""
    sign(copy, copy / "early", days_from=1, days_to=30, server=False)
    assert client_context(copy, "early").verify_mode == ssl.CERT_REQUIRED


def test_peer_name_is_none_without_a_finished_handshake(certs: Path) -> None:
    assert peer_name(None) is None
    unstarted = client_context(certs, "alice").wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    assert peer_name(unstarted) is None


# --- what is refused, and what each side is told ------------------------------------------------------
# (hub context, client context, host dialled) from the cert sets; then the words each side must see.
# Cases whose hub certificate is itself bad are listed in HUB_BROKEN: no client can succeed there.

Case = Callable[[Path, Path, Path], tuple[ssl.SSLContext, ssl.SSLContext, str]]
HUB_BROKEN = {"hub offers only TLS 1.2", "hub certificate not valid yet", "expired hub certificate"}
CASES: dict[str, tuple[Case, str, str]] = {
    "client certificate from another CA": (
        lambda c, o, t: (hub_context(c), plain_client(c / "ca.crt", o / "mallory.crt"), "127.0.0.1"),
        "the hub rejected our certificate: it is not signed by the hub's CA",
        "the client's certificate is not signed by our CA",
    ),
    "client without a certificate": (
        lambda c, o, t: (hub_context(c), plain_client(c / "ca.crt"), "127.0.0.1"),
        "the hub requires a client certificate",
        "the client presented no certificate",
    ),
    "hub from another CA": (
        lambda c, o, t: (hub_context(o), client_context(c, "alice"), "127.0.0.1"),
        "the hub's certificate is not signed by our CA",
        "the client rejected our certificate: it is not signed by the client's CA",
    ),
    "wrong host name": (
        lambda c, o, t: (hub_context(c), client_context(c, "alice"), "pi.example.org"),
        "hostname mismatch: the hub's certificate is not valid for 'pi.example.org'",
        "the client rejected our certificate (the client's log says why",
    ),
    "wrong IP address": (
        lambda c, o, t: (hub_context(c), client_context(c, "alice"), "10.9.8.7"),
        "hostname mismatch: the hub's certificate is not valid for '10.9.8.7'",
        "the client rejected our certificate",
    ),
    "client offers only TLS 1.2": (
        lambda c, o, t: (hub_context(c), plain_client(c / "ca.crt", c / "alice.crt", tls12=True), "127.0.0.1"),
        "TLS version mismatch with the hub (comtunnel speaks TLS 1.3 only)",
        "TLS version mismatch with the client",
    ),
    "hub offers only TLS 1.2": (
        lambda c, o, t: (_tls12(hub_context(c)), client_context(c, "alice"), "127.0.0.1"),
        "TLS version mismatch with the hub",
        "TLS version mismatch with the client",
    ),
    "client presents the hub certificate": (
        lambda c, o, t: (hub_context(c), plain_client(c / "ca.crt", c / "hub.crt"), "127.0.0.1"),
        "the hub rejected our certificate as the wrong kind",
        "the client's certificate is not a client certificate",
    ),
    "expired client certificate": (
        lambda c, o, t: (
            hub_context(c),
            plain_client(c / "ca.crt", sign(c, t / "old", days_from=-30, days_to=-1, server=False)),
            "127.0.0.1",
        ),
        "the hub rejected our certificate as expired or not yet valid",
        "the client's certificate has expired",
    ),
    "client certificate not valid yet": (
        lambda c, o, t: (
            hub_context(c),
            plain_client(c / "ca.crt", sign(c, t / "early", days_from=2, days_to=30, server=False)),
            "127.0.0.1",
        ),
        "the hub rejected our certificate",
        "the client's certificate is not valid yet: check the clocks",
    ),
    "hub certificate not valid yet": (
        lambda c, o, t: (
            hub_with(c, sign(c, t / "early", days_from=2, days_to=30, server=True)),
            client_context(c, "alice"),
            "127.0.0.1",
        ),
        "the hub's certificate is not valid yet: check the clocks on both machines",
        "the client rejected our certificate",
    ),
    "expired hub certificate": (
        lambda c, o, t: (
            hub_with(c, sign(c, t / "old", days_from=-30, days_to=-1, server=True)),
            client_context(c, "alice"),
            "127.0.0.1",
        ),
        "the hub's certificate has expired",
        "the client rejected our certificate as expired or not yet valid",
    ),
}


def _tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_is_explained_to_both_sides_and_the_hub_serves_on(
    case: str, certs: Path, other_certs: Path, tmp_path: Path
) -> None:
    make, client_says, hub_says = CASES[case]
    hub_ctx, client_ctx, host = make(certs, other_certs, tmp_path)
    with serving(hub_ctx) as hub:
        client_error = refused(client_ctx, hub.port, host)
        hub_error = hub.failure()
        assert client_says in describe_tls_error(client_error), repr(client_error)
        assert hub_says in describe_tls_error(hub_error, "client"), repr(hub_error)
        if case not in HUB_BROKEN:  # the same listening context goes on serving a client it should accept
            good = (
                client_context(other_certs, "mallory")
                if case == "hub from another CA"
                else client_context(certs, "bob")
            )
            assert exchange(good, hub.port)[0] in (b"bob:ping", b"mallory:ping")


def test_plaintext_peers_are_named_as_not_tls(certs: Path) -> None:
    with serving(hub_context(certs)) as hub:
        for greeting, expected in ((b"hello hub\r\n" * 4, "not speaking TLS"), (b"GET / HTTP/1.1\r\n\r\n", "HTTP")):
            with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as raw:
                raw.sendall(greeting)
                message = describe_tls_error(hub.failure(), "client")
                assert message.startswith("the client is not speaking TLS") and expected in message

    def ssh_banner(raw: socket.socket) -> None:
        raw.recv(4096)
        raw.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" * 4)

    with serving(None, ssh_banner) as ssh:
        assert describe_tls_error(refused(client_context(certs, "alice"), ssh.port)).startswith(
            "the hub is not speaking TLS"
        )


def test_connection_failures_around_the_handshake(certs: Path) -> None:
    client = client_context(certs, "alice")
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as info:
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert describe_tls_error(info.value) == "connection refused (is the hub running, and is this its address?)"

    def hang_up(raw: socket.socket) -> None:
        raw.recv(4096)

    def reset(raw: socket.socket) -> None:
        raw.recv(4096)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with serving(None, hang_up) as hub:
        message = describe_tls_error(refused(client, hub.port))
        assert message == "the hub closed the connection unexpectedly; if it refused our certificate, its log says why"
    with serving(None, reset) as hub:
        assert describe_tls_error(refused(client, hub.port)) == "connection reset by the hub"

    with serving(hub_context(certs)) as hub:
        socket.create_connection(("127.0.0.1", hub.port), timeout=5).close()
        assert describe_tls_error(hub.failure(), "client") == "the client closed the connection unexpectedly"
    assert describe_tls_error(None, "client") == "the client closed the connection"
    assert describe_tls_error(TimeoutError()) == "the hub did not answer in time"
    assert describe_tls_error(ConnectionResetError("connection closed during the TLS handshake")) == (
        "connection closed during the TLS handshake"
    )


# --- building contexts from a certificate directory ------------------------------------------------


@pytest.fixture
def copy(certs: Path, tmp_path: Path) -> Path:
    """A private copy of the session's certificate set, to damage."""
    return Path(shutil.copytree(certs, tmp_path / "certs"))


def test_missing_directory_and_files_say_what_to_run(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"does not exist.*comtunnel certs init"):
        hub_context(tmp_path / "nowhere")
    with pytest.raises(CertificateError, match=r"carol\.crt not found.*comtunnel certs client .* carol"):
        client_context(copy, "carol")
    (copy / "hub.key").unlink()
    with pytest.raises(CertificateError, match=r"hub\.key not found.*comtunnel certs init .* --hub-name"):
        hub_context(copy)
    (copy / "ca.crt").unlink()
    with pytest.raises(CertificateError, match=r"ca\.crt not found"):
        client_context(copy, "alice")
    with pytest.raises(UsageError, match="client name"):
        client_context(copy, "../alice")


def test_unreadable_and_damaged_files(copy: Path) -> None:
    (copy / "alice.crt").write_text("not a certificate\n")
    with pytest.raises(CertificateError, match=r"alice\.crt is not a PEM certificate"):
        client_context(copy, "alice")
    (copy / "bob.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CertificateError, match=r"bob\.key is not a PEM private key"):
        client_context(copy, "bob")
    (copy / "ca.crt").unlink()
    (copy / "ca.crt").mkdir()  # unreadable even for root
    with pytest.raises(CertificateError, match=r"cannot read .*ca\.crt: Is a directory"):
        hub_context(copy)


def test_mismatched_files_are_caught_before_any_handshake(copy: Path, other_certs: Path) -> None:
    shutil.copy(copy / "bob.key", copy / "alice.key")
    with pytest.raises(CertificateError, match=r"alice\.key does not belong to .*alice\.crt"):
        client_context(copy, "alice")
    for suffix in (".crt", ".key"):
        shutil.copy(copy / f"hub{suffix}", copy / f"imposter{suffix}")
        shutil.copy(other_certs / f"hub{suffix}", copy / f"hub{suffix}")
    with pytest.raises(CertificateError, match=r"imposter\.crt is not a client certificate"):
        client_context(copy, "imposter")
    with pytest.raises(CertificateError, match=r"hub\.crt is not signed by .*ca\.crt: .*different"):
        hub_context(copy)
    for suffix in (".crt", ".key"):
        shutil.copy(copy / f"bob{suffix}", copy / f"hub{suffix}")
    with pytest.raises(CertificateError, match=r"hub\.crt is not a hub \(server\) certificate"):
        hub_context(copy)


def test_expired_or_encrypted_own_certificate(copy: Path) -> None:
    sign(copy, copy / "old", days_from=-30, days_to=-1, server=False)
    with pytest.raises(CertificateError, match=r"old\.crt expired on \d{4}-\d\d-\d\d.*certs client"):
        client_context(copy, "old")
    key = serialization.load_pem_private_key((copy / "alice.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encrypted = serialization.BestAvailableEncryption(b"secret")
    (copy / "alice.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
    )
    with pytest.raises(CertificateError, match=r"alice\.key is encrypted"):  # and no passphrase prompt on a tty
        client_context(copy, "alice")


# --- a new hub certificate; what a hostname mismatch names ------------------------------------------------


def test_a_new_hub_certificate_keeps_old_client_certificates_valid(tmp_path: Path) -> None:
    """`certs hub` adds 'localhost': a client certificate made before it still connects, now by that name."""
    d = tmp_path / "c"
    init_certs(d, ["127.0.0.1"], ["alice"])
    alice = client_context(d, "alice")  # loaded from the files made before the new hub certificate
    old_alice = (d / "alice.crt").read_bytes()
    with serving(hub_context(d)) as hub:
        assert isinstance(refused(alice, hub.port, "localhost"), ssl.SSLCertVerificationError)
        hub.outcome()
    replace_hub(d, ["127.0.0.1", "localhost"])
    assert (d / "alice.crt").read_bytes() == old_alice
    with serving(hub_context(d)) as hub:
        for host in ("localhost", "127.0.0.1"):
            echo, hub_name, _ = exchange(alice, hub.port, host)
            assert (echo, hub_name, hub.outcome()) == (b"alice:ping", "127.0.0.1", "alice")
        assert exchange(client_context(d, "alice"), hub.port, "localhost")[0] == b"alice:ping"


def test_a_mismatch_lists_the_names_the_hub_certificate_holds(certs: Path) -> None:
    with serving(hub_context(certs)) as hub:
        exc = refused(client_context(certs, "alice"), hub.port, "pi.example.org")
        hub.outcome()
    assert is_name_mismatch(exc) and not is_name_mismatch(ssl.SSLError("other")) and not is_name_mismatch(None)
    assert describe_tls_error(exc, peer_names=["127.0.0.1", "localhost"]) == (
        "hostname mismatch: the hub's certificate is not valid for 'pi.example.org'; it holds: 127.0.0.1, localhost. "
        "Connect with one of those, or add the name where the CA is kept: "
        "'comtunnel certs hub DIR --hub-name 127.0.0.1 --hub-name localhost --hub-name pi.example.org'"
    )
    assert describe_tls_error(exc).startswith("hostname mismatch: the hub's certificate is not valid for 'pi.exa")


def test_the_names_probe_reads_only_a_certificate_our_ca_signed(certs: Path, other_certs: Path) -> None:
    """Handshake-only: it reads the hub's verified certificate and the hub never sees a finished handshake."""
    probe = names_probe_context(client_context(certs, "alice"))
    assert not probe.check_hostname and probe.verify_mode == ssl.CERT_REQUIRED
    with serving(hub_context(certs)) as hub:
        der = asyncio.run(peer_certificate("127.0.0.1", hub.port, probe, "pi.example.org", 5))
        assert der is not None and subject_alt_names(der) == ["127.0.0.1", "localhost"]
        assert isinstance(hub.failure(), ssl.SSLError | OSError)  # our Finished was never sent
    with serving(hub_context(other_certs)) as stranger:  # another CA: its names are not ours to report
        assert asyncio.run(peer_certificate("127.0.0.1", stranger.port, probe, "127.0.0.1", 5)) is None
        stranger.failure()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # a peer that never answers: bounded by the timeout
        port = silent.getsockname()[1]
        assert asyncio.run(peer_certificate("127.0.0.1", port, probe, "127.0.0.1", 0.3)) is None


def test_cli_mismatch_names_the_hub_certificate_names(tmp_path: Path, procs: list[Proc]) -> None:
    """A real hub whose certificate holds only 127.0.0.1; `comtunnel list` dials it as localhost."""
    d = tmp_path / "c"
    init_certs(d, ["127.0.0.1"], ["alice"])
    port = start_hub(tmp_path, d, procs, "--port", "loop0=loop://", "--control-socket", "none")
    argv = comtunnel("list", "--connect", f"localhost:{port}", "--certs", str(d), "--name", "alice")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "comtunnel: error: TLS with the hub failed: hostname mismatch: the hub's certificate is not valid for "
        "'localhost'; it holds: 127.0.0.1. Connect with one of those, or add the name where the CA is kept: "
        "'comtunnel certs hub DIR --hub-name 127.0.0.1 --hub-name localhost'"
    )
    ok = subprocess.run([*argv[:-5], "127.0.0.1:" + port, *argv[-4:]], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "loop0" in ok.stdout, ok.stdout + ok.stderr
