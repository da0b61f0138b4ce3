"""Certificates written by `certs`: what is in them, the files' modes, and refusals to do harm."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from comtunnel.certs import add_client, certificate_name, init_certs
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
    with pytest.raises(CertificateError, match="encrypted"):
        add_client(tmp_path / "two", "late")
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
