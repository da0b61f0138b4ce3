"""esptool's reset sequence reaches the hub's device as esptool made it (issue 15, point 3).

Real esptool drives ``comtunnel client --rfc2217`` with pyserial's ``rfc2217://`` client, through a
real hub, onto ``loop://`` (no chip: esptool resets, then fails to sync, as expected). Compared:

* what esptool made: each DTR/RTS request stamped (``time.monotonic()``) as pyserial's client
  wrote it to the socket (``esptool_stamped.py``), against
* what the device got: the hub's ``--line-trace``, stamped (the same clock) when the device call
  returned in the hub.

The single-line changes must be the same list, in the same order, and each gap between two of them
on the device within 10 ms of the same gap in esptool's. The two-line entries around them are
comtunnel's own, not esptool's: the client raises DTR and RTS when an RFC 2217 client connects (a
tty's open) and drops both when it leaves; they bracket one esptool session in the trace. pyserial's
open then sends DTR=1 and RTS=1 itself: those two are in both lists, before the reset.

On this machine (2 cores shared with other work) one wake-up of a bare asyncio TCP server in another
process takes 0.2 ms at the median and up to about 20 ms now and then (3 of 400 over 5 ms), so one
preempted hop can push one gap past 10 ms. esptool therefore runs up to ATTEMPTS times against the
same hub and client: the order must hold in every run, the gaps in one. A delay of comtunnel's own
(coalescing, a wait for an acknowledgement) is in every run, and fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import Proc, start_client, start_hub

TOLERANCE = 0.010
ATTEMPTS = 3
#: esp_pylib.serial_reset.classic_bootloader_reset, as esptool's ClassicReset runs it (set_rts re-applies
#: DTR after RTS), each step with the sleep esptool makes after it.
CLASSIC_RESET = [
    ("DTR=0", 0.0),  # IO0 high
    ("RTS=1", 0.0),  # EN low: the chip in reset
    ("DTR=0", 0.1),  # (set_rts's re-applied DTR), then enter_boot_delay
    ("DTR=1", 0.0),  # IO0 low
    ("RTS=0", 0.0),  # EN high: out of reset, into the bootloader
    ("DTR=1", 0.05),  # (re-applied DTR), then reset_delay
    ("DTR=0", 0.0),  # IO0 high: done
]
TRACE_LINE = re.compile(r"^(\d+\.\d+) \S+ dev ((?:DTR|RTS)=[01](?: (?:DTR|RTS)=[01])*)$", re.MULTILINE)
OPENED, CLOSED = "DTR=1 RTS=1", "DTR=0 RTS=0"  # the client's own, when an RFC 2217 client comes and goes

Stamps = list[tuple[float, str]]


def _run_esptool(tcp: str, query: str, stamps: Path) -> Stamps:
    """One esptool run (reset, then a failed sync: there is no chip); the DTR/RTS requests it sent."""
    esptool = [f"--port=rfc2217://127.0.0.1:{tcp}{query}", "--before=default-reset", "--connect-attempts=1", "chip-id"]
    wrapper = Path(__file__).with_name("esptool_stamped.py")
    run = subprocess.run(
        [sys.executable, str(wrapper), str(stamps), *esptool], capture_output=True, text=True, timeout=40
    )
    output = run.stdout + run.stderr
    assert run.returncode == 2 and "Connecting..." in output and "Failed to connect" in output, output
    sent = [(t, what) for t, what in json.loads(stamps.read_text())]
    names = [what for _, what in sent]
    start = _find(names, [what for what, _ in CLASSIC_RESET])  # esptool made the classic reset
    for (t0, _), (t1, _), (_, sleep) in zip(sent[start:], sent[start + 1 :], CLASSIC_RESET, strict=False):
        assert t1 - t0 >= sleep, f"esptool's own sleeps are missing: is this the classic reset? {sent}"
    return sent


def _sessions(trace: Path, count: int) -> list[Stamps]:
    """The device's single-line changes per esptool session (between the client's OPENED and CLOSED),
    once ``count`` sessions have ended."""
    deadline = time.monotonic() + 10
    while (text := trace.read_text()).count(f" {CLOSED}\n") < count:
        assert time.monotonic() < deadline, f"the client never dropped DTR/RTS after esptool left:\n{text}"
        time.sleep(0.05)
    sessions: list[Stamps] = []
    for t, what in TRACE_LINE.findall(text):
        if what == OPENED:
            sessions.append([])
        elif what == CLOSED:
            continue
        else:
            assert sessions and " " not in what, f"{what} outside an esptool session:\n{text}"
            sessions[-1].append((float(t), what))
    return sessions


def _find(sequence: list[str], part: list[str]) -> int:
    for i in range(len(sequence) - len(part) + 1):
        if sequence[i : i + len(part)] == part:
            return i
    raise AssertionError(f"{part} is not in {sequence}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("query", ["?ign_set_control", ""], ids=["ign_set_control", "acknowledged"])
def test_esptool_classic_reset_reaches_the_device_in_order_and_in_time(
    certs: Path, tmp_path: Path, procs: list[Proc], query: str
) -> None:
    """``?ign_set_control`` (what esptool's docs advise for RFC 2217) sleeps 100 ms after each request;
    without it pyserial polls for each acknowledgement every 50 ms. Either way the gaps are esptool's."""
    trace = tmp_path / "lines.trace"
    hub_port = start_hub(tmp_path, certs, procs, "--port", "dev=loop://", "--line-trace", str(trace))
    client = start_client(tmp_path, certs, procs, hub_port, "--rfc2217", "dev=127.0.0.1:0")
    client.wait_for("dev: open on the hub")
    tcp = client.wait_for(r"dev: RFC 2217 server on 127\.0\.0\.1:(\d+)").group(1)
    reports = []
    for attempt in range(ATTEMPTS):
        sent = _run_esptool(tcp, query, tmp_path / f"esptool{attempt}.json")
        got = _sessions(trace, attempt + 1)[attempt]
        assert [w for _, w in got] == [w for _, w in sent], f"the device got {got}, esptool sent {sent}"
        gaps = zip(got, got[1:], sent, sent[1:], strict=False)
        errors = [abs((d1 - d0) - (s1 - s0)) for (d0, _), (d1, _), (s0, _), (s1, _) in gaps]
        latency = [d - s for (d, _), (s, _) in zip(got, sent, strict=True)]
        reports.append(
            f"run {attempt + 1}: {len(errors)} gaps, error max {max(errors) * 1e3:.2f} ms; "
            f"latency {min(latency) * 1e3:.2f}..{max(latency) * 1e3:.2f} ms"
        )
        print(reports[-1])
        if max(errors) <= TOLERANCE:
            return
    pytest.fail(f"no run had every gap within {TOLERANCE * 1e3:g} ms of esptool's: " + "; ".join(reports))
