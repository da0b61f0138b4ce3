"""TOML config files through the real CLI: keys come from the options, errors name file and key."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import Proc, PtyDevice, comtunnel, open_app, read_exactly, write_all

from comtunnel.cli import build_parser
from comtunnel.config import apply


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(comtunnel(*args), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('lisen = "127.0.0.1:0"', "hub.toml: unknown key 'lisen' (did you mean 'listen'?)"),
        ('listen = "127.0.0.1:x"', "hub.toml: key 'listen': expected HOST:PORT, got '127.0.0.1:x'"),
        ("port = 5", "hub.toml: key 'port' must be a list of strings like \"NAME=DEVICE\""),
        ('port = ["no-equals-sign"]', "hub.toml: key 'port': expected NAME=DEVICE, got 'no-equals-sign'"),
        ('allow-remote = "yes"', "hub.toml: key 'allow-remote' must be true or false, not 'yes'"),
        ('grace = "soon"', "hub.toml: key 'grace': expected a number of seconds, got 'soon'"),
        ("port = [", "hub.toml: not valid TOML"),
        ("[access.bob]\nfull = 3", "hub.toml: [access.bob]: 'full' must be a list of port names or patterns"),
        ("[access.bob]\nread = []", "hub.toml: [access.bob]: unknown key 'read' (use 'full' or 'monitor')"),
        ("[logging]\nlevel = 1", "hub.toml: unknown key 'logging'"),
        ('max-startups = "10:30"', "--max-startups: expected BEGIN:RATE:FULL such as 32:30:128, got '10:30'"),
        ('max-startups = "50:30:10"', "connection limits: startup limits must be 0 < begin <= full"),
        ('max-sessions = "many"', "--max-sessions: expected a number, got 'many'"),
        ('max-buffered = "lots"', "--max-buffered: expected a size like 16M or 65536, got 'lots'"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, certs: Path, text: str, message: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(text + "\n")
    result = run("hub", "--config", str(config), "--certs", str(certs), "--listen", "127.0.0.1:0", "--port=x=loop://")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = run("client", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert f"config file {tmp_path / 'nope.toml'} does not exist" in result.stderr


def test_every_option_has_a_key_and_command_line_overrides(tmp_path: Path) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    config = tmp_path / "client.toml"
    config.write_text(
        'connect = ["hub.example:7000"]\ncerts = "/etc/c"\nname = "alice"\nlink = ["a=/tmp/a", "b=/tmp/b"]\n'
        'dead-timeout = 30\nreplay-bound = "4M"\n'
    )
    applied = apply(commands["client"], config)
    args = parser.parse_args(["client", "--link", "c=/tmp/c", "--dead-timeout", "9"])
    applied.finish(args)
    assert args.connect == ["hub.example:7000"] and args.certs == "/etc/c" and args.name == "alice"
    assert args.link == ["c=/tmp/c"]  # the command line's list replaces the file's
    assert args.dead_timeout == 9.0
    assert args.replay_bound == 4 << 20
    keys = {o[2:] for a in commands["hub"]._actions for o in a.option_strings if o.startswith("--")}
    assert {"listen", "connect", "certs", "port", "rfc2217", "raw", "allow-remote", "grace", "crl"} <= keys


@pytest.mark.timeout(60)
def test_hub_and_client_run_from_config_files_alone(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    try:
        hub_toml = tmp_path / "hub.toml"
        hub_toml.write_text(f'listen = "127.0.0.1:0"\ncerts = "{certs}"\nport = ["dev={device.path}"]\n')
        hub = Proc(tmp_path, "hub", "hub", "--config", str(hub_toml))
        procs.append(hub)
        port = hub.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1)
        client_toml = tmp_path / "client.toml"
        client_toml.write_text(
            f'connect = "127.0.0.1:{port}"\ncerts = "{certs}"\nname = "alice"\nlink = "dev={tmp_path / "dev"},19200"\n'
        )
        client = Proc(tmp_path, "client", "client", "--config", str(client_toml))
        procs.append(client)
        client.wait_for(r"dev: open on the hub \(19200,8N1\)")
        app = open_app(tmp_path / "dev")
        write_all(app, b"configured")
        assert read_exactly(device.master, 10, 10) == b"configured"
        os.close(app)
    finally:
        device.close()


def test_connection_limits_from_the_command_line_and_a_file(tmp_path: Path) -> None:
    from comtunnel.app.config import hub_config
    from comtunnel.policy.admission import AdmissionLimits

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    base = ["hub", "--listen=127.0.0.1:0", "--certs=c", "--port=a=loop://"]
    defaults = hub_config(vars(parser.parse_args(base)))
    assert defaults.admission == AdmissionLimits() and defaults.max_buffered == 16 << 20
    config = tmp_path / "hub.toml"
    config.write_text('max-startups = "4:50:16"\nmax-startups-per-source = 2\nmax-sessions = 9\nmax-buffered = "2M"\n')
    applied = apply(commands["hub"], config)
    args = parser.parse_args([*base, "--handshake-timeout", "2.5"])
    applied.finish(args)
    chosen = hub_config(vars(args))
    assert chosen.admission == AdmissionLimits(
        begin=4, rate=0.5, full=16, per_source=2, sessions=9, handshake_timeout=2.5
    )
    assert chosen.max_buffered == 2 << 20


def test_relative_paths_in_a_file_are_taken_from_its_directory(tmp_path: Path) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    where = tmp_path / "etc"
    where.mkdir()
    config = where / "client.toml"
    config.write_text(
        'connect = ["hub:7000"]\ncerts = "certs"\nname = "alice"\nlink-dir = "/abs/ports"\n'
        'link = ["a=links/a,9600,7E1", "b=/dev/abs"]\n'
    )
    applied = apply(commands["client"], config)
    args = parser.parse_args(["client"])
    applied.finish(args)
    assert args.certs == str(where / "certs")
    assert args.link_dir == "/abs/ports"
    assert args.link == [f"a={where / 'links/a'},9600,7E1", "b=/dev/abs"]
    args = parser.parse_args(["client", "--certs", "mine"])  # the command line's stay as given
    assert args.certs == "mine"


def test_line_trace_from_the_command_line_and_a_file(tmp_path: Path) -> None:
    from comtunnel.app.config import hub_config

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    base = ["hub", "--listen=127.0.0.1:0", "--certs=c", "--port=a=loop://"]
    assert hub_config(vars(parser.parse_args(base))).line_trace is None
    assert hub_config(vars(parser.parse_args([*base, "--line-trace=t.log"]))).line_trace == Path("t.log")
    config = tmp_path / "hub.toml"
    config.write_text('line-trace = "trace/lines.log"\n')
    applied = apply(commands["hub"], config)
    args = parser.parse_args(base)
    applied.finish(args)
    assert hub_config(vars(args)).line_trace == tmp_path / "trace/lines.log"  # from the file's directory


@pytest.mark.timeout(60)
def test_a_hub_config_with_relative_paths_runs_from_anywhere(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    import shutil

    etc = tmp_path / "etc"
    shutil.copytree(certs, etc / "certs")
    (etc / "hub.toml").write_text(
        'listen = "127.0.0.1:0"\ncerts = "certs"\nport = ["a=loop://"]\ncontrol-socket = "run/hub.sock"\n'
    )
    hub = subprocess.Popen(
        comtunnel("hub", "--config", str(etc / "hub.toml")),
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not (etc / "run" / "hub.sock").exists() and time.monotonic() < deadline and hub.poll() is None:
            time.sleep(0.05)
        assert (etc / "run" / "hub.sock").exists(), hub.stderr.read() if hub.poll() is not None else "not yet"
    finally:
        hub.send_signal(signal.SIGINT)
        assert hub.wait(10) == 130
    assert not (etc / "run").exists()  # the directory the hub made for its socket, removed again
