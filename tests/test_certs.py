"""Certificates written by `certs`: what is in them, and the files' modes."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from comtunnel.certs import add_client, certificate_name, init_certs
from comtunnel.errors import CertificateError, UsageError
from comtunnel.tls import client_context, hub_context


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_ca_hub_and_clients(tmp_path: Path) -> None:
    init_certs(tmp_path, ["pi.example.org", "192.168.1.20"], ["laptop"])
    hub = load(tmp_path / "hub.crt")
    san = hub.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pi.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.20")]
    eku = hub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    laptop = load(tmp_path / "laptop.crt")
    assert certificate_name(laptop) == "laptop"
    assert laptop.issuer == load(tmp_path / "ca.crt").subject
    for key in ("ca.key", "hub.key", "laptop.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    hub_context(tmp_path)
    client_context(tmp_path, "laptop")


def test_add_client_and_mistakes(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="certs init"):
        add_client(tmp_path, "late")
    init_certs(tmp_path, ["hub"], [])
    add_client(tmp_path, "late")
    assert certificate_name(load(tmp_path / "late.crt")) == "late"
    with pytest.raises(UsageError, match="already exists"):
        add_client(tmp_path, "late")
    with pytest.raises(UsageError, match="already holds a CA"):
        init_certs(tmp_path, ["hub"], [])
    for bad in ("../x", ".hidden", "ca", "hub", "a b"):
        with pytest.raises(UsageError):
            add_client(tmp_path, bad)
    with pytest.raises(CertificateError, match="comtunnel certs client"):
        client_context(tmp_path, "nobody")
