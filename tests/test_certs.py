"""Certificates written by `certs`: what is in them, the files' modes, and refusals to do harm."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import comtunnel

from comtunnel.certinfo import (
    certificate_name,
    format_certificates,
    revoked_serials,
    show_certificates,
    subject_alt_names,
)
from comtunnel.certnames import CRL_FILE
from comtunnel.certs import PASSPHRASE_ENV, add_client, ca_passphrase, init_certs, replace_hub, revoke
from comtunnel.errors import CertificateError, UsageError
from comtunnel.tls import client_context, hub_context


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


E = TypeVar("E", bound=x509.ExtensionType)


def extension(cert: x509.Certificate, kind: type[E]) -> E:
    return cert.extensions.get_extension_for_class(kind).value


def test_init_writes_ca_hub_and_clients(tmp_path: Path) -> None:
    written = init_certs(tmp_path, ["pi.example.org", "192.168.1.20", "fe80::1", "*.lab.example"], ["laptop", "a.b"])
    names = {"ca.crt", "ca.key", "hub.crt", "hub.key", "laptop.crt", "laptop.key", "a.b.crt", "a.b.key"}
    assert {p.name for p in written} == names == {p.name for p in tmp_path.iterdir()}
    ca, hub, laptop = load(tmp_path / "ca.crt"), load(tmp_path / "hub.crt"), load(tmp_path / "laptop.crt")

    san = hub.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pi.example.org", "*.lab.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.1.20"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert certificate_name(hub) == "pi.example.org"
    assert ExtendedKeyUsageOID.SERVER_AUTH in extension(hub, x509.ExtendedKeyUsage)
    assert certificate_name(laptop) == "laptop"
    assert list(extension(laptop, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    assert extension(ca, x509.BasicConstraints) == x509.BasicConstraints(ca=True, path_length=0)
    for cert in (hub, laptop, load(tmp_path / "a.b.crt")):
        assert extension(cert, x509.BasicConstraints) == x509.BasicConstraints(ca=False, path_length=None)
        cert.verify_directly_issued_by(ca)
    serials = {c.serial_number for c in (ca, hub, laptop)}
    assert len(serials) == 3 and all(s.bit_length() > 64 for s in serials)
    lifetime = laptop.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3650)
    hub_context(tmp_path)
    client_context(tmp_path, "laptop")


def test_key_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 0 a key written with default permissions would be world-readable: the mode must not rely on umask."""
    old = os.umask(0)
    try:
        init_certs(tmp_path, ["hub"], ["laptop"])
        add_client(tmp_path, "late")
    finally:
        os.umask(old)
    for key in ("ca.key", "hub.key", "laptop.key", "late.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600, key
    assert not list(tmp_path.glob("*.tmp"))


def test_internationalized_hub_name_becomes_an_a_label(tmp_path: Path) -> None:
    init_certs(tmp_path, ["münchen.example"], [])
    san = load(tmp_path / "hub.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["xn--mnchen-3ya.example"]


def test_add_client_signs_with_the_existing_ca(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="comtunnel certs init"):
        add_client(tmp_path, "late")
    init_certs(tmp_path, ["hub"], [])
    assert [p.name for p in add_client(tmp_path, "late", days=7)] == ["late.key", "late.crt"]
    late = load(tmp_path / "late.crt")
    late.verify_directly_issued_by(load(tmp_path / "ca.crt"))
    assert certificate_name(late) == "late"
    assert late.not_valid_after_utc - late.not_valid_before_utc <= dt.timedelta(days=7, minutes=5)
    with pytest.raises(UsageError, match="already exists"):
        add_client(tmp_path, "late")


def test_existing_files_are_not_overwritten_unless_asked(tmp_path: Path) -> None:
    init_certs(tmp_path, ["hub"], ["alice"])
    old_ca = load(tmp_path / "ca.crt")
    with pytest.raises(UsageError, match="already holds a CA; use --force"):
        init_certs(tmp_path, ["hub"], [])
    assert load(tmp_path / "ca.crt") == old_ca

    hub_machine = tmp_path / "hub-machine"  # ca.key stays offline: ca.crt alone still means "a CA is here"
    hub_machine.mkdir()
    for name in ("ca.crt", "hub.crt", "hub.key"):
        (hub_machine / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(UsageError, match="already holds a CA"):
        init_certs(hub_machine, ["hub"], [])
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "bob.key").write_text("precious")
    with pytest.raises(UsageError, match=r"already holds bob\.key"):
        init_certs(stray, ["hub"], ["bob"])
    assert (stray / "bob.key").read_text() == "precious" and sorted(os.listdir(stray)) == ["bob.key"]

    init_certs(tmp_path, ["hub"], ["bob"], overwrite=True)
    new_ca = load(tmp_path / "ca.crt")
    assert new_ca.subject != old_ca.subject and new_ca.public_key() != old_ca.public_key()
    load(tmp_path / "bob.crt").verify_directly_issued_by(new_ca)
    with pytest.raises(CertificateError, match=r"alice\.crt is not signed by"):  # the old client is now stale
        client_context(tmp_path, "alice")


@pytest.mark.parametrize(
    ("hubs", "clients", "days", "match"),
    [
        ([], ["x"], 30, "at least one --hub-name"),
        (["hub.example:8443"], [], 30, "without a port"),
        (["two words"], [], 30, "neither a DNS name nor an IP address"),
        ([""], [], 30, "neither"),
        (["a" * 64 + ".example"], [], 30, "neither"),
        (["hub"], ["../x"], 30, r"'\.\./x'"),
        (["hub"], [".hidden"], 30, "not start with '.'"),
        (["hub"], ["ca"], 30, "not be 'ca' or 'hub'"),
        (["hub"], ["HUB"], 30, "not be 'ca' or 'hub'"),
        (["hub"], ["a b"], 30, "client name"),
        (["hub"], [""], 30, "client name"),
        (["hub"], ["x" * 65], 30, "1-64"),
        (["hub"], ["x", "x"], 30, "given twice"),
        (["hub"], [], 0, "1 to 36500 days"),
        (["hub"], [], 10**6, "1 to 36500 days"),
    ],
)
def test_bad_arguments_write_nothing(
    tmp_path: Path, hubs: list[str], clients: list[str], days: int, match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        init_certs(tmp_path / "c", hubs, clients, days=days)
    assert not (tmp_path / "c").exists()


def test_long_hub_name_fits_in_the_san(tmp_path: Path) -> None:
    name = ".".join(["a" * 60] * 3) + ".example"  # > 64 characters: too long for a CN, fine for a DNS name
    init_certs(tmp_path, [name], [])
    hub = load(tmp_path / "hub.crt")
    assert hub.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == [name]
    assert certificate_name(hub) == name[:64]


def test_unwritable_destination_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot create the certificate directory"):
        init_certs(blocker / "certs", ["hub"], [])
    init_certs(tmp_path / "c", ["hub"], [])
    (tmp_path / "c" / "late.key.tmp").mkdir()  # in the way of the temporary key file, even for root
    with pytest.raises(UsageError, match=r"cannot write .*late\.key"):
        add_client(tmp_path / "c", "late")


def test_damaged_ca_is_a_certificate_error(tmp_path: Path) -> None:
    init_certs(tmp_path / "one", ["hub"], [])
    init_certs(tmp_path / "two", ["hub"], [])
    (tmp_path / "one" / "ca.key").write_bytes((tmp_path / "two" / "ca.key").read_bytes())
    with pytest.raises(CertificateError, match=r"ca\.key does not belong to .*ca\.crt"):
        add_client(tmp_path / "one", "late")
    key = serialization.load_pem_private_key((tmp_path / "two" / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encrypted = serialization.BestAvailableEncryption(b"secret")
    (tmp_path / "two" / "ca.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
    )
    with pytest.raises(CertificateError, match="encrypted and no passphrase was given"):
        add_client(tmp_path / "two", "late")  # pytest's stdin is not a terminal
    (tmp_path / "two" / "ca.crt").write_text("junk")
    with pytest.raises(CertificateError, match=r"cannot read .*ca\.crt: not a PEM file"):
        add_client(tmp_path / "two", "late")
    (tmp_path / "two" / "ca.key").unlink()
    with pytest.raises(CertificateError, match=r"ca\.key not found .*where the CA key is kept"):
        add_client(tmp_path / "two", "late")
    assert not (tmp_path / "two" / "late.crt").exists()


def test_certificate_name_from_der_and_garbage(tmp_path: Path) -> None:
    init_certs(tmp_path, ["hub"], ["laptop"])
    der = load(tmp_path / "laptop.crt").public_bytes(serialization.Encoding.DER)
    assert certificate_name(der) == "laptop"
    with pytest.raises(CertificateError, match="not a DER"):
        certificate_name(b"\x30\x03junk")


# --- symlinks -----------------------------------------------------------------------------------

SYMLINK_REFUSED = "is a symlink; refusing to write through it"


def plant_symlink(link: Path, tmp_path: Path, kind: str) -> Path:
    """A symlink at ``link`` to a precious file (``kind`` "file") or to nothing yet ("dangling")."""
    target = tmp_path / ("precious.txt" if kind == "file" else "nowhere.txt")
    if kind == "file":
        target.write_text("precious")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


def assert_untouched(target: Path, kind: str) -> None:
    if kind == "file":
        assert target.read_text() == "precious" and not target.is_symlink()
    else:
        assert not target.exists() and not target.is_symlink()


@pytest.mark.parametrize("kind", ["dangling", "file"])
@pytest.mark.parametrize("name", ["ca.crt", "hub.crt", "laptop.crt", "ca.key", "hub.key", "laptop.key"])
def test_init_refuses_to_write_through_a_symlink(tmp_path: Path, name: str, kind: str) -> None:
    """Checked before anything is written, so the refusal leaves the directory as it was."""
    directory = tmp_path / "c"
    target = plant_symlink(directory / name, tmp_path, kind)
    with pytest.raises(UsageError, match=rf"{name} {SYMLINK_REFUSED}"):
        init_certs(directory, ["hub"], ["laptop"])
    assert os.listdir(directory) == [name]
    assert_untouched(target, kind)


@pytest.mark.parametrize("kind", ["dangling", "file"])
@pytest.mark.parametrize("name", ["ca.crt", "hub.crt", "laptop.crt"])
def test_init_force_refuses_a_symlink_in_an_existing_set(tmp_path: Path, name: str, kind: str) -> None:
    init_certs(tmp_path / "c", ["hub"], ["laptop"])
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir() if p.name != name}
    (tmp_path / "c" / name).unlink()
    target = plant_symlink(tmp_path / "c" / name, tmp_path, kind)
    with pytest.raises(UsageError, match=SYMLINK_REFUSED):
        init_certs(tmp_path / "c", ["hub"], ["laptop"], overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir() if p.name != name} == before
    assert_untouched(target, kind)


@pytest.mark.parametrize("kind", ["dangling", "file"])
@pytest.mark.parametrize("name", ["late.crt", "late.key"])
def test_add_client_refuses_a_symlink(tmp_path: Path, name: str, kind: str) -> None:
    init_certs(tmp_path / "c", ["hub"], [])
    target = plant_symlink(tmp_path / "c" / name, tmp_path, kind)
    with pytest.raises(UsageError, match=rf"{name} {SYMLINK_REFUSED}"):
        add_client(tmp_path / "c", "late")
    assert_untouched(target, kind)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.startswith("late")) == [name]


@pytest.mark.parametrize("kind", ["dangling", "file"])
def test_revoke_refuses_a_symlinked_crl(tmp_path: Path, kind: str) -> None:
    init_certs(tmp_path / "c", ["hub"], ["laptop"])
    target = plant_symlink(tmp_path / "c" / CRL_FILE, tmp_path, kind)
    with pytest.raises(UsageError, match=rf"crl\.pem {SYMLINK_REFUSED}"):
        revoke(tmp_path / "c", "laptop")
    assert_untouched(target, kind)
    assert (tmp_path / "c" / CRL_FILE).is_symlink()


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    """PATH.tmp pointing elsewhere is removed, not written through; the real file lands at PATH."""
    init_certs(tmp_path / "c", ["hub"], ["laptop"])
    victims = {}
    for name in ("late.key", "late.crt", CRL_FILE):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious")
        (tmp_path / "c" / f"{name}.tmp").symlink_to(victims[name])
    add_client(tmp_path / "c", "late")
    revoke(tmp_path / "c", "late")
    assert all(v.read_text() == "precious" for v in victims.values())
    assert not list((tmp_path / "c").glob("*.tmp"))
    load(tmp_path / "c" / "late.crt").verify_directly_issued_by(load(tmp_path / "c" / "ca.crt"))
    assert stat.S_IMODE((tmp_path / "c" / "late.key").stat().st_mode) == 0o600
    assert serialization.load_pem_private_key((tmp_path / "c" / "late.key").read_bytes(), None)
    ca = load(tmp_path / "c" / "ca.crt")
    assert load(tmp_path / "c" / "late.crt").serial_number in revoked_serials(tmp_path / "c" / CRL_FILE, ca)


def test_certificates_and_crl_are_world_readable_keys_are_not(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        init_certs(tmp_path, ["hub"], ["laptop"])
        revoke(tmp_path, "laptop")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {
        "ca.crt": 0o644,
        "hub.crt": 0o644,
        "laptop.crt": 0o644,
        CRL_FILE: 0o644,
        "ca.key": 0o600,
        "hub.key": 0o600,
        "laptop.key": 0o600,
    }


# --- an encrypted CA key ------------------------------------------------------------------------


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdin is not a terminal (as under cron or a pipe), and no passphrase in the environment."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def encrypted(tmp_path: Path, no_terminal: None) -> Path:
    """A certificate directory whose ca.key is encrypted with 's3cret' (from a passphrase file)."""
    (tmp_path / "pass").write_text("s3cret\nthe second line is not part of it\n")
    init_certs(tmp_path / "c", ["hub"], ["laptop"], ca_passphrase=ca_passphrase(tmp_path / "pass"))
    return tmp_path / "c"


def test_init_with_a_passphrase_encrypts_only_the_ca_key(encrypted: Path) -> None:
    pem = (encrypted / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    key = serialization.load_pem_private_key(pem, b"s3cret")
    assert key.public_key() == load(encrypted / "ca.crt").public_key()
    assert stat.S_IMODE((encrypted / "ca.key").stat().st_mode) == 0o600
    for name in ("hub.key", "laptop.key"):  # the hub and clients load theirs unattended
        assert serialization.load_pem_private_key((encrypted / name).read_bytes(), None)
    hub_context(encrypted)
    client_context(encrypted, "laptop")


def test_encrypted_ca_signs_and_revokes_with_a_passphrase_file(tmp_path: Path, encrypted: Path) -> None:
    passphrase = ca_passphrase(tmp_path / "pass")
    assert passphrase == b"s3cret"
    add_client(encrypted, "late", ca_passphrase=passphrase)
    ca = load(encrypted / "ca.crt")
    load(encrypted / "late.crt").verify_directly_issued_by(ca)
    _, serial = revoke(encrypted, "late", ca_passphrase=passphrase)
    assert serial == load(encrypted / "late.crt").serial_number
    assert set(revoked_serials(encrypted / CRL_FILE, ca)) == {serial}


def test_encrypted_ca_with_the_environment_variable(
    tmp_path: Path, encrypted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret")
    add_client(encrypted, "late", ca_passphrase=ca_passphrase(None))
    _, serial = revoke(encrypted, "laptop", ca_passphrase=ca_passphrase(None))
    assert set(revoked_serials(encrypted / CRL_FILE, load(encrypted / "ca.crt"))) == {serial}
    (tmp_path / "other").write_text("from-the-file\n")
    assert ca_passphrase(tmp_path / "other") == b"from-the-file"  # a file given beats the variable


def test_encrypted_ca_with_a_wrong_or_no_passphrase_fails_clearly(encrypted: Path) -> None:
    for call in (
        lambda p: add_client(encrypted, "late", ca_passphrase=p),
        lambda p: revoke(encrypted, "laptop", ca_passphrase=p),
    ):
        with pytest.raises(CertificateError, match=r"wrong passphrase for .*c/ca\.key$"):
            call(b"s3cret ")
        with pytest.raises(
            CertificateError,
            match=rf"ca\.key is encrypted and no passphrase was given: give it with --ca-passphrase-file FILE "
            rf"or \${PASSPHRASE_ENV}",
        ):
            call(None)
    assert not (encrypted / "late.crt").exists() and not (encrypted / "late.key").exists()
    assert not (encrypted / CRL_FILE).exists()


def test_a_passphrase_for_an_unencrypted_ca_is_not_needed(tmp_path: Path) -> None:
    init_certs(tmp_path, ["hub"], [])
    add_client(tmp_path, "late", ca_passphrase=b"anything")
    load(tmp_path / "late.crt").verify_directly_issued_by(load(tmp_path / "ca.crt"))


def test_bad_passphrase_sources_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    assert ca_passphrase(None) is None
    (tmp_path / "empty").write_text("\nsecond line\n")
    with pytest.raises(UsageError, match=r"passphrase file .*empty is empty"):
        ca_passphrase(tmp_path / "empty")
    with pytest.raises(UsageError, match=r"cannot read the passphrase file .*missing: No such file"):
        ca_passphrase(tmp_path / "missing")
    (tmp_path / "crlf").write_bytes(b"p\xc3\xa4ss\r\n")
    assert ca_passphrase(tmp_path / "crlf") == "päss".encode()
    monkeypatch.setenv(PASSPHRASE_ENV, "")
    with pytest.raises(UsageError, match="set but empty"):
        ca_passphrase(None)
    with pytest.raises(UsageError, match="empty CA passphrase"):
        init_certs(tmp_path / "c", ["hub"], [], ca_passphrase=b"")
    assert not (tmp_path / "c").exists()


# --- through the real CLI -----------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    return subprocess.run(
        comtunnel("certs", *args),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,  # not a terminal: nothing may wait for a typed passphrase
        env={**base, **(env or {})},
    )


def test_cli_encrypted_ca_passphrase_file_env_wrong_and_missing(tmp_path: Path) -> None:
    d = str(tmp_path / "c")
    (tmp_path / "pass").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")
    done = run_cli("init", d, "--hub-name", "hub", "--client", "laptop", "--ca-passphrase-file", str(tmp_path / "pass"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c" / "ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

    done = run_cli("client", d, "late")
    assert done.returncode == 3
    assert done.stderr.strip() == (
        f"comtunnel: error: {d}/ca.key is encrypted and no passphrase was given: give it with "
        f"--ca-passphrase-file FILE or ${PASSPHRASE_ENV}, or run this on a terminal to be asked"
    )
    done = run_cli("client", d, "late", "--ca-passphrase-file", str(tmp_path / "wrong"))
    assert (done.returncode, done.stderr.strip()) == (3, f"comtunnel: error: wrong passphrase for {d}/ca.key")
    done = run_cli("revoke", d, "laptop", env={PASSPHRASE_ENV: "guess"})
    assert (done.returncode, done.stderr.strip()) == (3, f"comtunnel: error: wrong passphrase for {d}/ca.key")
    assert not (tmp_path / "c" / "late.crt").exists() and not (tmp_path / "c" / CRL_FILE).exists()

    done = run_cli("client", d, "late", "--ca-passphrase-file", str(tmp_path / "pass"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"{d}/late.key", f"{d}/late.crt"]
    done = run_cli("revoke", d, "late", env={PASSPHRASE_ENV: "s3cret"})
    assert done.returncode == 0, done.stderr
    assert "revoked client 'late'" in done.stdout
    ca = load(tmp_path / "c" / "ca.crt")
    assert set(revoked_serials(tmp_path / "c" / CRL_FILE, ca)) == {load(tmp_path / "c" / "late.crt").serial_number}
    done = run_cli("revoke", d, "laptop", "--ca-passphrase-file", str(tmp_path / "pass"))
    assert done.returncode == 0, done.stderr
    assert len(revoked_serials(tmp_path / "c" / CRL_FILE, ca)) == 2

    helps = [run_cli(action, "--help").stdout for action in ("init", "client", "revoke")]
    assert all("--ca-passphrase-file FILE" in h and PASSPHRASE_ENV in h for h in helps)


def test_cli_refuses_a_symlinked_certificate(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "hub.crt").symlink_to(tmp_path / "elsewhere.crt")
    done = run_cli("init", str(tmp_path / "c"), "--hub-name", "hub")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"comtunnel: error: {tmp_path}/c/hub.crt {SYMLINK_REFUSED}")
    assert os.listdir(tmp_path / "c") == ["hub.crt"] and not (tmp_path / "elsewhere.crt").exists()


def test_cli_asks_for_the_passphrase_on_a_terminal(tmp_path: Path) -> None:
    """A real pseudo-terminal as the child's controlling terminal: getpass prompts there."""
    (tmp_path / "pass").write_text("s3cret\n")
    init_certs(tmp_path / "c", ["hub"], [], ca_passphrase=ca_passphrase(tmp_path / "pass"))

    def ask(typed: bytes) -> tuple[int, str]:
        argv = comtunnel("certs", "client", str(tmp_path / "c"), "tty")
        env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
        pid, fd = pty.fork()
        if pid == 0:  # the child: a new session whose controlling terminal is the pty
            os.execve(argv[0], argv, env)
        output, deadline, sent = b"", time.monotonic() + 60, False
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 1)
                if not ready:
                    continue
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not sent and b"passphrase for " in output:
                    os.write(fd, typed + b"\n")
                    sent = True
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output.decode(errors="replace")

    code, output = ask(b"guess")
    assert code == 3 and f"passphrase for {tmp_path}/c/ca.key: " in output and "wrong passphrase" in output
    assert not (tmp_path / "c" / "tty.crt").exists()
    code, output = ask(b"s3cret")
    assert code == 0, output
    assert "guess" not in output and "s3cret" not in output  # not echoed
    load(tmp_path / "c" / "tty.crt").verify_directly_issued_by(load(tmp_path / "c" / "ca.crt"))


# --- a new hub certificate, and what a directory holds ----------------------------------------------


def test_replace_hub_keeps_the_ca_and_clients_and_holds_the_new_names(tmp_path: Path) -> None:
    init_certs(tmp_path / "c", ["pi.example.org"], ["laptop"])
    kept = {n: (tmp_path / "c" / n).read_bytes() for n in ("ca.crt", "ca.key", "laptop.crt", "laptop.key")}
    old_hub = load(tmp_path / "c" / "hub.crt")
    written = replace_hub(tmp_path / "c", ["pi.example.org", "10.0.0.5", "pi.lan"])
    assert [p.name for p in written] == ["hub.key", "hub.crt"]
    assert {n: (tmp_path / "c" / n).read_bytes() for n in kept} == kept
    hub, ca = load(tmp_path / "c" / "hub.crt"), load(tmp_path / "c" / "ca.crt")
    assert hub.serial_number != old_hub.serial_number and hub.public_key() != old_hub.public_key()
    hub.verify_directly_issued_by(ca)
    san = extension(hub, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["pi.example.org", "pi.lan"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert subject_alt_names(hub) == ["pi.example.org", "10.0.0.5", "pi.lan"]
    assert certificate_name(hub) == "pi.example.org"
    assert list(extension(hub, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert stat.S_IMODE((tmp_path / "c" / "hub.key").stat().st_mode) == 0o600
    assert not list((tmp_path / "c").glob("*.tmp"))
    hub_context(tmp_path / "c")  # key and certificate belong together, signed by the CA


def test_replace_hub_bad_arguments_and_missing_ca_write_nothing(tmp_path: Path) -> None:
    init_certs(tmp_path / "c", ["pi.example.org"], [])
    before = (tmp_path / "c" / "hub.crt").read_bytes()
    for names, message in (
        ([], "at least one --hub-name"),
        (["a", "a"], "given twice"),
        (["x:7000"], "without a port"),
    ):
        with pytest.raises(UsageError, match=message):
            replace_hub(tmp_path / "c", names)
    (tmp_path / "c" / "ca.key").unlink()
    with pytest.raises(CertificateError, match=r"ca\.key not found"):
        replace_hub(tmp_path / "c", ["pi.lan"])
    assert (tmp_path / "c" / "hub.crt").read_bytes() == before


@pytest.mark.parametrize("kind", ["dangling", "file"])
@pytest.mark.parametrize("name", ["hub.crt", "hub.key"])
def test_replace_hub_refuses_a_symlink(tmp_path: Path, name: str, kind: str) -> None:
    init_certs(tmp_path / "c", ["hub"], [])
    other = "hub.key" if name == "hub.crt" else "hub.crt"
    before = (tmp_path / "c" / other).read_bytes()
    (tmp_path / "c" / name).unlink()
    target = plant_symlink(tmp_path / "c" / name, tmp_path, kind)
    with pytest.raises(UsageError, match=rf"{name} {SYMLINK_REFUSED}"):
        replace_hub(tmp_path / "c", ["hub", "hub.lan"])
    assert_untouched(target, kind)
    assert (tmp_path / "c" / other).read_bytes() == before  # refused before either file was written


def test_show_certificates_names_purposes_dates_and_revocation(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_certs(d, ["pi.example.org", "192.168.1.20"], ["laptop", "lab-pc"])
    infos = show_certificates(d)
    assert [(i.name, i.purpose) for i in infos] == [
        ("ca", "CA"),
        ("hub", "hub"),
        ("lab-pc", "client"),
        ("laptop", "client"),
    ]
    ca, hub, lab, laptop = infos
    assert hub.common_name == "pi.example.org" and hub.sans == ["pi.example.org", "192.168.1.20"]
    assert laptop.common_name == "laptop" and laptop.sans == []
    assert ca.common_name.startswith("comtunnel CA ")
    assert all(i.issued_by_ca and i.revoked is None for i in infos)
    assert all(3648 <= i.days_left <= 3650 for i in infos)
    assert laptop.sha256 == load(d / "laptop.crt").fingerprint(hashes.SHA256()).hex(":").upper()
    assert laptop.not_after == load(d / "laptop.crt").not_valid_after_utc

    revoke(d, "laptop")
    (only,) = show_certificates(d, "laptop")
    assert only.revoked is not None and abs(only.revoked - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert show_certificates(d, "lab-pc")[0].revoked is None
    with pytest.raises(UsageError, match=r"no certificate 'carol' in .* \(there: ca, hub, lab-pc, laptop\)"):
        show_certificates(d, "carol")
    with pytest.raises(CertificateError, match="does not exist"):
        show_certificates(tmp_path / "nothing")


def test_show_marks_a_certificate_from_another_ca(tmp_path: Path) -> None:
    init_certs(tmp_path / "c", ["hub"], ["laptop"])
    init_certs(tmp_path / "o", ["hub"], ["stranger"])
    for suffix in (".crt", ".key"):
        (tmp_path / "c" / f"stranger{suffix}").write_bytes((tmp_path / "o" / f"stranger{suffix}").read_bytes())
    (stranger,) = show_certificates(tmp_path / "c", "stranger")
    assert not stranger.issued_by_ca
    assert "NOT signed by ca.crt" in format_certificates([stranger])


def test_cli_certs_hub_and_show(tmp_path: Path) -> None:
    d = str(tmp_path / "c")
    (tmp_path / "pass").write_text("s3cret\n")
    done = run_cli("init", d, "--hub-name", "pi.example.org", "--client", "laptop", "--client", "lab-pc",
                   "--ca-passphrase-file", str(tmp_path / "pass"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_cli("hub", d, "--hub-name", "pi.example.org", "--hub-name", "10.0.0.5")
    assert done.returncode == 3 and "is encrypted and no passphrase was given" in done.stderr
    done = run_cli("hub", d, "--hub-name", "pi.example.org", "--hub-name", "10.0.0.5",
                   "--ca-passphrase-file", str(tmp_path / "pass"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [f"{d}/hub.key", f"{d}/hub.crt", "hub names: pi.example.org, 10.0.0.5"]
    assert "client certificates stay valid" in done.stdout
    done = run_cli("revoke", d, "laptop", "--ca-passphrase-file", str(tmp_path / "pass"))
    assert done.returncode == 0, done.stderr

    shown = run_cli("show", d)
    assert shown.returncode == 0, shown.stderr
    blocks = shown.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [f"{n} ({d}/{n}.crt)" for n in ("ca", "hub", "lab-pc", "laptop")]
    hub_lines = dict(line.split(None, 1) for line in blocks[1].splitlines()[1:] if not line.startswith("  name"))
    assert hub_lines["purpose"].strip() == "hub"
    assert hub_lines["SANs"].strip() == "pi.example.org, 10.0.0.5"
    assert "days left" in hub_lines["not"]
    fingerprint = load(tmp_path / "c" / "hub.crt").fingerprint(hashes.SHA256()).hex(":").upper()
    assert hub_lines["SHA-256"].strip() == fingerprint
    assert "revoked" not in blocks[0] + blocks[1]
    assert blocks[2].splitlines()[-1].split() == ["revoked", "no"]
    assert blocks[3].splitlines()[-1].split()[:2] == ["revoked", "yes,"]

    one = run_cli("show", d, "laptop", "--json")
    assert one.returncode == 0, one.stderr
    (laptop,) = json.loads(one.stdout)
    assert (laptop["name"], laptop["purpose"], laptop["cn"], laptop["sans"]) == ("laptop", "client", "laptop", [])
    assert laptop["revoked"] is not None and laptop["issued_by_ca"] is True
    assert laptop["sha256"] == load(tmp_path / "c" / "laptop.crt").fingerprint(hashes.SHA256()).hex(":").upper()
    hub = json.loads(run_cli("show", d, "hub", "--json").stdout)[0]
    assert hub["sans"] == ["pi.example.org", "10.0.0.5"] and hub["revoked"] is None and hub["days_left"] >= 3648

    unknown = run_cli("show", d, "carol")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip() == f"comtunnel: error: no certificate 'carol' in {d} (there: ca, hub, lab-pc, laptop)"


def test_a_relay_and_a_hub_of_one_ca_never_share_a_name(tmp_path: Path) -> None:
    """Inside a relay's session the client checks the hub by name only, so a relay certificate with
    the hub's name could pose as the hub: both `certs relay` and `certs hub` refuse to make one."""
    run = lambda *args: subprocess.run(comtunnel("certs", *args), capture_output=True, text=True, timeout=60)  # noqa: E731
    assert run("init", str(tmp_path), "--hub-name", "pi.lab", "--client", "alice").returncode == 0
    clash = run("relay", str(tmp_path), "--relay-name", "relay.example", "--relay-name", "pi.lab")
    assert clash.returncode == 2, clash.stderr
    assert "pi.lab is already a name in the hub's certificate" in clash.stderr and "Traceback" not in clash.stderr
    assert not (tmp_path / "relay.crt").exists()
    assert run("relay", str(tmp_path), "--relay-name", "relay.example").returncode == 0
    clash = run("hub", str(tmp_path), "--hub-name", "relay.example")
    assert clash.returncode == 2 and "already a name in the relay's certificate" in clash.stderr, clash.stderr
    assert run("hub", str(tmp_path), "--hub-name", "pi2.lab").returncode == 0
