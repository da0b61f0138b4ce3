"""`comtunnel demo`: the embedded default must run, show traffic on both ports, and exit 0."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(60)
def test_demo_runs_and_shows_traffic() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "comtunnel", "demo", "--seconds", "3"], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "echo ok 3/3" in result.stdout and "last GPS sentence: $GP" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_without_its_app_prints_a_command_that_works_here() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "comtunnel", "demo", "--seconds", "1", "--no-app"],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    assert f"{sys.executable} -m serial.tools.miniterm " in result.stdout + result.stderr
