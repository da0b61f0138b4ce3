"""A second client started with a link path that a running client serves is refused, naming the
process that holds it; the first client's link and session carry on untouched (issue 14, point 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import Proc, PtyDevice, open_app_seen, read_exactly, start_client, start_hub, write_all


@pytest.mark.timeout(60)
def test_a_live_link_is_not_taken_over(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    link = tmp_path / "links" / "dev"
    try:
        hub_port = start_hub(tmp_path, certs, procs, f"--port=dev={device.path}", "--port=other=loop://")
        first = start_client(tmp_path, certs, procs, hub_port, f"--link=dev={link}")
        first.wait_for(r"dev: open on the hub")
        target = os.readlink(link)
        second = start_client(tmp_path, certs, procs, hub_port, f"--link=other={link}", name="second")
        assert second.popen.wait(15) == 2
        message = second.text()
        assert f"{link} already points at {target}" in message
        assert f"(pid {first.popen.pid})" in message and "refusing to take it over" in message
        assert "Traceback" not in message
        assert os.readlink(link) == target  # untouched, and still the first client's
        app = open_app_seen(link, first, "dev")
        write_all(app, b"still mine")
        assert read_exactly(device.master, 10, 10) == b"still mine"
        os.close(app)
        assert first.popen.poll() is None
    finally:
        device.close()
