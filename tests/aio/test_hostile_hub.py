"""A hostile or broken hub names its ports: none of those names may become a path outside
--link-dir, a hidden file, or a forged log line on the client."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from comtunnel.aio.client import Client
from comtunnel.aio.hub import Hub, PortSpec
from comtunnel.tls import client_context, hub_context


class HostileHub(Hub):
    """A real hub whose port list also carries names a hostile hub would send."""

    def __init__(self, *args: Any, extra: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra

    def port_list_for(self, client: str) -> list[dict[str, Any]]:
        return [*super().port_list_for(client), *({"name": n, "access": "full"} for n in self.extra)]


def test_hostile_port_names_never_become_paths(certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "outside"
    hostile = [
        "../escape",
        "../../escape2",
        str(outside),
        ".hidden",
        "..",
        ".",
        "a/b",
        "line\nforged: hub says hello",
        "\x1b[2Jclear",
        "x" * 300,
        "-rf",
    ]
    link_dir = tmp_path / "links" / "ports"

    async def main() -> None:
        hub = HostileHub([PortSpec("ok", "loop://")], hub_context(certs), extra=hostile)
        (_, port), *_ = await hub.start("127.0.0.1", 0)
        client = Client("127.0.0.1", port, client_context(certs, "alice"), link_dir=link_dir)
        task = asyncio.ensure_future(client.run())
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            assert sorted(p.name for p in link_dir.iterdir()) == ["ok"]
            assert sorted(client.channels) == ["ok"]
        finally:
            client.stop()
            await asyncio.wait_for(task, 10)
            await hub.close()

    with caplog.at_level(logging.INFO, logger="comtunnel"):
        asyncio.run(main())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links"] or not (tmp_path / "links").exists()
    assert not outside.exists() and not (tmp_path / "escape").exists() and not (tmp_path / "links" / "escape").exists()
    warnings = [r.getMessage() for r in caplog.records if "not linking a port" in r.getMessage()]
    assert len(warnings) == len(hostile)
    assert all("\n" not in m and "\x1b" not in m for r in caplog.records for m in [r.getMessage()])
