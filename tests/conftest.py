"""Shared fixtures: throwaway certificate sets made with the real `certs` module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Proc

from comtunnel.certs import init_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a hub certificate for 127.0.0.1/localhost and clients 'alice' and 'bob'."""
    directory = tmp_path_factory.mktemp("certs")
    init_certs(directory, ["127.0.0.1", "localhost"], ["alice", "bob"])
    return directory


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated CA: its client 'mallory' must be refused by a hub of `certs`."""
    directory = tmp_path_factory.mktemp("other-certs")
    init_certs(directory, ["127.0.0.1"], ["mallory", "alice"])
    return directory


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """comtunnel processes a test starts; each is stopped (SIGINT, then kill) afterwards."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()
