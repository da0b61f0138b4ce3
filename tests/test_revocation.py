"""The hub's revocation list fails closed: once a client is revoked, no broken, deleted or forged
CRL lets it back in, and a --crl given explicitly must be there from the start."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from support import comtunnel

from comtunnel.access import RevocationList
from comtunnel.app.hub import hub_revocations
from comtunnel.certs import init_certs, revoke
from comtunnel.errors import CertificateError, UsageError


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_certs(directory, ["127.0.0.1"], ["alice", "bob"])
    return directory


def serial(certs: Path, name: str) -> int:
    return x509.load_pem_x509_certificate((certs / f"{name}.crt").read_bytes()).serial_number


def test_a_crl_that_never_existed_revokes_nothing(certs: Path, caplog: pytest.LogCaptureFixture) -> None:
    revocations = hub_revocations(certs, None)
    assert revocations.serials == frozenset() and not revocations.loaded
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("damage", ["delete", "garbage", "other CA", "unreadable"])
def test_a_revoked_client_stays_revoked_whatever_happens_to_the_file(
    certs: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    crl, bob = revoke(certs, "bob")[0], serial(certs, "bob")
    revocations = hub_revocations(certs, None)
    assert bob in revocations.serials
    if damage == "delete":
        crl.unlink()
    elif damage == "garbage":
        crl.write_text("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
    elif damage == "other CA":
        other = tmp_path / "other"
        init_certs(other, ["127.0.0.1"], ["carol"])
        shutil.copy(revoke(other, "carol")[0], crl)  # a valid CRL, signed by someone else, revoking nobody here
    else:
        crl.unlink()
        crl.mkdir()  # reading it fails with EISDIR
    with caplog.at_level(logging.ERROR, logger="comtunnel"):
        assert revocations.reload_if_changed() is False
        assert revocations.reload_if_changed() is False  # and says so once, not every second
    assert bob in revocations.serials
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "still refusing" in errors[0], errors


def test_a_restored_crl_is_read_again(certs: Path) -> None:
    crl = revoke(certs, "bob")[0]
    saved = crl.read_bytes()
    revocations = hub_revocations(certs, None)
    crl.unlink()
    revocations.reload_if_changed()
    crl.write_bytes(saved)
    revoke(certs, "alice")  # a newer list, with both
    assert revocations.reload_if_changed() is True
    assert revocations.serials == {serial(certs, "bob"), serial(certs, "alice")}


def test_an_explicit_crl_must_exist_and_be_valid_at_start(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        hub_revocations(certs, tmp_path / "typo.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    with pytest.raises(CertificateError, match="is not a revocation list signed by"):
        hub_revocations(certs, bad)
    good = revoke(certs, "bob")[0]
    assert serial(certs, "bob") in hub_revocations(certs, good).serials
    assert isinstance(hub_revocations(certs, good), RevocationList)


@pytest.mark.timeout(30)
def test_hub_with_a_mistyped_crl_does_not_start(certs: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        comtunnel("hub", "--listen=127.0.0.1:0", f"--certs={certs}", "--port=a=loop://", f"--crl={tmp_path}/crl.pme"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert f"--crl {tmp_path}/crl.pme: no such file" in result.stderr and "Traceback" not in result.stderr
