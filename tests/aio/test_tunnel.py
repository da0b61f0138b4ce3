"""End to end through real TLS on 127.0.0.1: PTY devices <- hub => client -> PTY virtual ports."""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import termios
from pathlib import Path

import pytest
import serial
from support import PtyDevice, open_app, read_exactly, running_client, running_hub, wait_for, write_all

from comtunnel.aio.client import AttachSpec, Client, LinkSpec, LinkState
from comtunnel.errors import CertificateError, UsageError
from comtunnel.protocol.settings import ModemLines, PortSettings
from comtunnel.tls import client_context

MiB = 1 << 20


def payload(seed: int, size: int = MiB) -> bytes:
    """Random bytes that surely contain every byte value (0x00, 0xFF, XON/XOFF, CR/LF...)."""
    data = bytearray(random.Random(seed).randbytes(size - 256))
    data[1000:1000] = bytes(range(256))
    return bytes(data)


@pytest.mark.timeout(120)
def test_one_mib_each_way_on_two_ports_at_once(certs: Path, tmp_path: Path) -> None:
    devices = {"a": PtyDevice(), "b": PtyDevice()}
    links = {name: tmp_path / name for name in devices}

    async def main() -> None:
        async with running_hub(certs, {n: d.path for n, d in devices.items()}) as (_, port):
            async with running_client(certs, port, links):
                apps = {name: open_app(path) for name, path in links.items()}
                await asyncio.sleep(0.1)  # the client learns of the app's open via inotify
                jobs = []
                for i, (name, dev) in enumerate(devices.items()):
                    up, down = payload(2 * i), payload(2 * i + 1)
                    jobs += [
                        asyncio.to_thread(write_all, apps[name], up),
                        asyncio.to_thread(write_all, dev.master, down),
                        _expect(asyncio.to_thread(read_exactly, dev.master, len(up)), up, f"{name} app->dev"),
                        _expect(asyncio.to_thread(read_exactly, apps[name], len(down)), down, f"{name} dev->app"),
                    ]
                await asyncio.gather(*jobs)
                for fd in apps.values():
                    os.close(fd)

    try:
        asyncio.run(main())
    finally:
        for dev in devices.values():
            dev.close()


async def _expect(job: asyncio.Future[bytes] | object, expected: bytes, what: str) -> None:
    got = await job  # type: ignore[misc]
    assert got == expected, f"{what}: {len(got)} bytes, first difference at {_diff(got, expected)}"


def _diff(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_baud_rate_and_stop_bits_reach_the_device(certs: Path, tmp_path: Path) -> None:
    device = PtyDevice()
    link = tmp_path / "dev"

    async def main() -> None:
        async with running_hub(certs, {"dev": device.path}) as (_, port):
            async with running_client(certs, port, {"dev": link}):
                app = serial.Serial(str(link), 115200)
                try:
                    app.baudrate = 57600
                    app.stopbits = serial.STOPBITS_TWO

                    def device_termios() -> tuple[int, bool]:
                        attrs = termios.tcgetattr(device.slave)
                        return attrs[5], bool(attrs[2] & termios.CSTOPB)

                    took = await wait_for(lambda: device_termios() == (termios.B57600, True), 2.0)
                    assert took < 0.5
                finally:
                    app.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def test_dtr_rts_follow_the_application_open_and_close(certs: Path, tmp_path: Path) -> None:
    """loop:// wires DTR to DSR and RTS to CTS, so the device reports our lines back."""
    link = tmp_path / "loop"

    async def main() -> None:
        async with running_hub(certs, {"loop": "loop://"}) as (hub, port):
            async with running_client(certs, port, {"loop": link}) as client:
                channel = client.channels["loop"]
                both = ModemLines.DSR | ModemLines.CTS
                await wait_for(lambda: channel.modem & both == ModemLines.NONE, 2.0)
                app = serial.Serial(str(link), 9600)
                await wait_for(lambda: channel.modem & both == both, 2.0)
                app.write(b"\x00\xff\x11\x13\r\n")
                assert await asyncio.to_thread(app.read, 6) == b"\x00\xff\x11\x13\r\n"
                app.close()
                await wait_for(lambda: channel.modem & both == ModemLines.NONE, 2.0)

    asyncio.run(main())


def test_unknown_port_is_a_clear_error(certs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"loop": "loop://"}) as (_, port):
            spec = LinkSpec("nope", tmp_path / "nope", PortSettings())
            client = Client("127.0.0.1", port, client_context(certs, "alice"), links=[spec])
            with pytest.raises(UsageError, match=r"no port named 'nope' \(ports: loop\)"):
                await asyncio.wait_for(client.run(), 10)
        assert not (tmp_path / "nope").exists()

    asyncio.run(main())


def test_second_client_gets_busy_and_hub_serves_one_after_another(certs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"loop": "loop://"}) as (_, port):
            async with running_client(certs, port, {"loop": tmp_path / "a"}) as first:
                assert first.channels["loop"].state is LinkState.OPEN
                async with running_client(certs, port, {"loop": tmp_path / "b"}, name="bob") as second:
                    assert second.channels["loop"].state is LinkState.FAILED
                    assert "in use by alice" in second.channels["loop"].failure
            for _ in range(3):  # the hub keeps serving, one client after another
                async with running_client(certs, port, {"loop": tmp_path / "c"}, name="bob") as again:
                    assert again.channels["loop"].state is LinkState.OPEN

    asyncio.run(main())


def _context_trusting_hub(certs: Path, cert: Path | None) -> ssl.SSLContext:
    """A client context that trusts our hub but presents `cert` (or no certificate at all)."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        context.load_cert_chain(cert.with_suffix(".crt"), cert.with_suffix(".key"))
    return context


@pytest.mark.parametrize("who", ["other CA", "no certificate"])
def test_bad_client_certificate_is_refused_and_hub_keeps_serving(
    who: str, certs: Path, other_certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = other_certs / "mallory" if who == "other CA" else None

    async def main() -> None:
        async with running_hub(certs, {"loop": "loop://"}) as (_, port):
            spec = LinkSpec("loop", tmp_path / "m", PortSettings())
            intruder = Client("127.0.0.1", port, _context_trusting_hub(certs, cert), links=[spec])
            with pytest.raises(CertificateError) as info:
                await asyncio.wait_for(intruder.run(), 10)
            expected = "not signed by the hub's CA" if cert else "requires a client certificate"
            assert expected in str(info.value)
            async with running_client(certs, port, {"loop": tmp_path / "ok"}) as good:
                assert good.channels["loop"].state is LinkState.OPEN
        hub_side = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("comtunnel.aio.hub"))
        assert "TLS handshake" in hub_side and "127.0.0.1" in hub_side

    with caplog.at_level("INFO"):
        asyncio.run(main())


def test_hub_from_another_ca_is_refused_by_the_client(certs: Path, other_certs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with running_hub(other_certs, {"loop": "loop://"}) as (_, port):
            spec = LinkSpec("loop", tmp_path / "m", PortSettings())
            client = Client("127.0.0.1", port, client_context(certs, "alice"), links=[spec])
            with pytest.raises(CertificateError, match="certificate"):
                await asyncio.wait_for(client.run(), 10)

    asyncio.run(main())


def test_attach_joins_a_hub_port_to_a_local_device(certs: Path, tmp_path: Path) -> None:
    """--attach: device-to-device link. The hub's loop:// echoes what the local device sends."""
    local = PtyDevice()

    async def main() -> None:
        async with running_hub(certs, {"loop": "loop://"}) as (_, port):
            spec = AttachSpec("loop", local.path, PortSettings(115200))
            client = Client("127.0.0.1", port, client_context(certs, "alice"), attach=[spec])
            task = asyncio.ensure_future(client.run())
            try:
                await asyncio.wait_for(client.ready.wait(), 10)
                data = payload(9, 256 * 1024)
                reader = asyncio.ensure_future(asyncio.to_thread(read_exactly, local.master, len(data)))
                await asyncio.to_thread(write_all, local.master, data)
                assert await reader == data
            finally:
                client.stop()
                await asyncio.wait_for(task, 10)

    try:
        asyncio.run(main())
    finally:
        local.close()


def test_without_links_every_hub_port_gets_one_in_link_dir(certs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"a": "loop://", "b": "loop://"}) as (_, port):
            client = Client("127.0.0.1", port, client_context(certs, "alice"), link_dir=tmp_path / "ports")
            task = asyncio.ensure_future(client.run())
            try:
                await asyncio.wait_for(client.ready.wait(), 10)
                assert sorted(p.name for p in (tmp_path / "ports").iterdir()) == ["a", "b"]
                assert all(c.state is LinkState.OPEN for c in client.channels.values())
            finally:
                client.stop()
                await asyncio.wait_for(task, 10)
        assert not (tmp_path / "ports").exists()  # the links, and the directory the client made for them

    asyncio.run(main())
