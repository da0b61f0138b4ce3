"""The argument parser: every command, its options and their help, and the TOML config file whose
keys are the same options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from comtunnel import __version__
from comtunnel.cli.commands import (
    cmd_certs_client,
    cmd_certs_hub,
    cmd_certs_init,
    cmd_certs_relay,
    cmd_certs_revoke,
    cmd_certs_show,
    cmd_client,
    cmd_console,
    cmd_demo,
    cmd_hub,
    cmd_list,
    cmd_relay,
    cmd_status,
)
from comtunnel.errors import UsageError


class _SubParser(argparse.ArgumentParser):
    """Every command takes -v and -q after its name too (``comtunnel hub ... -v``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0, help=argparse.SUPPRESS)
        self.add_argument("-q", "--quiet", dest="sub_quiet", action="count", default=0, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comtunnel",
        description="Serial ports over one mutual-TLS connection.",
    )
    parser.add_argument("--version", action="version", version=f"comtunnel {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output: connection details (-vv: every event)"
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output (-qq: errors only)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubParser)

    certs = sub.add_parser("certs", help="create the CA and certificates for hub and clients")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = certs_sub.add_parser("init", help="create a CA, a hub certificate and client certificates")
    init.add_argument("dir", metavar="DIR")
    init.add_argument(
        "--hub-name",
        action="append",
        required=True,
        metavar="NAME",
        help="DNS name or IP address clients use to reach the hub (repeatable)",
    )
    init.add_argument("--client", action="append", metavar="NAME", help="a client certificate to create")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    add_passphrase_option(init, "encrypt ca.key with the passphrase on FILE's first line (default: unencrypted)")
    init.set_defaults(func=cmd_certs_init)
    client_cert = certs_sub.add_parser("client", help="add a client certificate signed by DIR's CA")
    client_cert.add_argument("dir", metavar="DIR")
    client_cert.add_argument("name", metavar="NAME")
    add_passphrase_option(client_cert, "FILE's first line unlocks an encrypted ca.key (default: ask on a terminal)")

    revoke = certs_sub.add_parser("revoke", help="revoke a client certificate (the hub refuses it within seconds)")
    revoke.add_argument("dir", metavar="DIR", help="the CA directory (holds ca.key and NAME.crt)")
    revoke.add_argument("name", metavar="NAME")
    add_passphrase_option(revoke, "FILE's first line unlocks an encrypted ca.key (default: ask on a terminal)")
    revoke.set_defaults(func=cmd_certs_revoke)
    client_cert.set_defaults(func=cmd_certs_client)

    hub_cert = certs_sub.add_parser(
        "hub", help="replace the hub certificate (new names) with DIR's CA; client certificates stay valid"
    )
    hub_cert.add_argument("dir", metavar="DIR", help="the CA directory (holds ca.key)")
    hub_cert.add_argument(
        "--hub-name",
        action="append",
        required=True,
        metavar="NAME",
        help="every DNS name or IP address the new certificate holds (repeatable; replaces the old ones)",
    )
    add_passphrase_option(hub_cert, "FILE's first line unlocks an encrypted ca.key (default: ask on a terminal)")
    hub_cert.set_defaults(func=cmd_certs_hub)

    relay_cert = certs_sub.add_parser("relay", help="make relay.crt/relay.key with DIR's CA, for `comtunnel relay`")
    relay_cert.add_argument("dir", metavar="DIR", help="the CA directory (holds ca.key)")
    relay_cert.add_argument(
        "--relay-name",
        action="append",
        required=True,
        metavar="NAME",
        help="DNS name or IP address hubs and clients dial the relay by (repeatable; not a hub's name)",
    )
    add_passphrase_option(relay_cert, "FILE's first line unlocks an encrypted ca.key (default: ask on a terminal)")
    relay_cert.set_defaults(func=cmd_certs_relay)

    show = certs_sub.add_parser("show", help="names, purpose, expiry, fingerprint and revocation of DIR's certificates")
    show.add_argument("dir", metavar="DIR")
    show.add_argument("name", metavar="NAME", nargs="?", help="only this one: ca, hub or a client's name")
    show.add_argument("--json", action="store_true", help="print a JSON list")
    show.set_defaults(func=cmd_certs_show)

    hub = sub.add_parser("hub", help="serve local serial ports to clients")
    hub.add_argument("--listen", metavar="HOST:PORT", help="accept clients here")
    hub.add_argument(
        "--connect",
        action="append",
        metavar="HOST:PORT",
        help="dial a client started with --listen (for a hub behind NAT; repeatable)",
    )
    hub.add_argument(
        "--relay",
        action="append",
        metavar="HOST:PORT",
        help="register at a relay (`comtunnel relay`), where clients ask for this hub by name (repeatable)",
    )
    hub.add_argument("--certs", required=True, metavar="DIR", help="holds ca.crt, hub.crt, hub.key")
    hub.add_argument(
        "--port",
        action="append",
        metavar="NAME=DEVICE",
        help="a port to serve: a device path or a pyserial URL (repeatable)",
    )
    add_serve_options(hub, "serve a hub port directly")
    hub.add_argument("--crl", metavar="FILE", help="revoked client certificates (default: crl.pem in --certs)")
    hub.add_argument(
        "--control-socket",
        metavar="PATH",
        help="where `comtunnel status` asks (default $XDG_RUNTIME_DIR/comtunnel/hub.sock; 'none': no socket)",
    )
    hub.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here (needs prometheus_client)")
    hub.add_argument(
        "--line-trace",
        metavar="FILE",
        help="append each DTR/RTS/BREAK change, settings change, purge, open and close applied to a device, "
        "with its monotonic and UTC time (at 1 MiB FILE becomes FILE.1)",
    )
    hub.set_defaults(func=cmd_hub)

    client = sub.add_parser("client", help="use a hub's ports as local serial ports")
    client.add_argument(
        "--connect",
        action="append",
        metavar="HOST:PORT",
        help="a hub to dial (repeat for several hubs; then name ports HUB/PORT)",
    )
    client.add_argument("--listen", metavar="HOST:PORT", help="wait for the hub to dial us (hub --connect)")
    client.add_argument(
        "--relay", metavar="HOST:PORT", help="meet the hub named by --hub-name at this relay (hub --relay)"
    )
    add_relay_ca_option(client)
    client.add_argument(
        "--connect-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="give up (exit 4) after this long without reaching the hub, at the start or after a "
        "lost connection (default: keep trying)",
    )
    client.add_argument(
        "--hub-name", metavar="NAME", help="the name to verify in the hub's certificate (default: the --connect host)"
    )
    client.add_argument("--certs", required=True, metavar="DIR", help="holds ca.crt, NAME.crt, NAME.key")
    client.add_argument("--name", required=True, help="this client's certificate name")
    client.add_argument(
        "--link",
        action="append",
        metavar="PORT=PATH[,SETTINGS][,mode=0660,group=NAME]",
        help="a virtual port at PATH for the hub's PORT, e.g. gps=/tmp/gps,4800,7E1,mode=0660,group=dialout",
    )
    client.add_argument(
        "--link-dir", metavar="DIR", help="where to put links for all hub ports when no --link/--attach is given"
    )
    client.add_argument(
        "--link-mode", metavar="MODE", help="every virtual port's mode, e.g. 0660 (per link: --link ...,mode=0660)"
    )
    client.add_argument(
        "--link-group", metavar="GROUP", help="every virtual port's group, e.g. dialout (per link: ,group=NAME)"
    )
    client.add_argument("--link-owner", metavar="USER", help="every virtual port's owner (root only; ,owner=NAME)")
    client.add_argument(
        "--attach",
        action="append",
        metavar="PORT=DEVICE[,SETTINGS]",
        help="join the hub's PORT to an existing local serial port",
    )
    add_serve_options(client, "serve a tunneled port locally")
    client.set_defaults(func=cmd_client)

    listing = sub.add_parser("list", help="show a hub's ports, who holds them, and their line settings")
    listing.add_argument("--connect", metavar="HOST:PORT", help="the hub to ask (not with --local)")
    listing.add_argument("--relay", metavar="HOST:PORT", help="instead of --connect: ask hub --hub-name at this relay")
    add_relay_ca_option(listing)
    listing.add_argument("--certs", metavar="DIR")
    listing.add_argument("--name", help="this client's certificate name")
    listing.add_argument(
        "--local",
        action="store_true",
        help="instead: the virtual ports of the clients running here (their links, hubs, state, settings)",
    )
    listing.add_argument("--hub-name", metavar="NAME", help="the name to verify in the hub's certificate")
    listing.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=15.0,
        metavar="SECONDS",
        help="give up (exit 4) if the hub has not answered within this long (default 15)",
    )
    listing.set_defaults(func=cmd_list)

    console = sub.add_parser(
        "console",
        help="an interactive terminal on a hub port (no PTY), or plain byte streams on pipes (LAVA)",
        description="Your terminal on a hub port: raw keys in, the device's output out. Ctrl-] ? lists the "
        "escape commands (q quits). On pipes, stdin and stdout are plain byte streams and the command "
        "exits 0 once stdin closes and what it sent has reached the device.",
    )
    console.add_argument(
        "port", metavar="PORT[,SETTINGS]", help="the hub's port, e.g. uno or uno,115200,8N1 (default 115200,8N1)"
    )
    console.add_argument("--connect", metavar="HOST:PORT", help="the hub")
    console.add_argument("--relay", metavar="HOST:PORT", help="instead of --connect: meet hub --hub-name at this relay")
    add_relay_ca_option(console)
    console.add_argument("--certs", metavar="DIR", help="holds ca.crt, NAME.crt, NAME.key")
    console.add_argument("--name", help="this client's certificate name")
    console.add_argument("--hub-name", metavar="NAME", help="the name to verify in the hub's certificate")
    console.add_argument(
        "--connect-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="give up (exit 4) after this long without reaching the hub, at the start or after a lost "
        "connection (default: keep trying)",
    )
    console.add_argument(
        "--log", metavar="FILE", help="append a trace: every chunk with a timestamp and its direction (in/out)"
    )
    console.add_argument(
        "--monitor",
        action="store_true",
        help="read only: nothing typed is sent and line commands are refused (the hub decides whether "
        "this client watches or holds the port: its [access] monitor list)",
    )
    console.add_argument(
        "--escape",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Ctrl-] escape commands (default: on a terminal only; --no-escape passes 0x1d through)",
    )
    add_session_options(console, hub=False)
    console.set_defaults(func=cmd_console)

    status = sub.add_parser("status", help="show a running hub's sessions, channels, bytes and rates")
    status.add_argument("--socket", metavar="PATH", help="the hub's --control-socket (default: as the hub's)")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=positive_float,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 1) until Ctrl-C",
    )
    status.set_defaults(func=cmd_status)

    relay = sub.add_parser("relay", help="pair hubs and clients that are both behind NAT; sees only ciphertext")
    relay.add_argument("--listen", required=True, metavar="HOST:PORT", help="where hubs and clients dial in")
    relay.add_argument("--certs", required=True, metavar="DIR", help="holds ca.crt, relay.crt, relay.key")
    relay.add_argument(
        "--relay-ca", metavar="FILE", help="also admit hubs and clients with certificates from the CAs in FILE"
    )
    relay.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="close a pairing that passed no byte for this long (default 300)",
    )
    relay.add_argument(
        "--control-socket",
        metavar="PATH",
        help="where `comtunnel status` asks (default $XDG_RUNTIME_DIR/comtunnel/relay.sock; 'none': no socket)",
    )
    add_limit_options(relay, buffered=False)
    relay.set_defaults(func=cmd_relay)

    demo = sub.add_parser("demo", help="emulated devices, hub and client on 127.0.0.1")
    demo.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--no-app", action="store_true", help="leave the virtual ports to you (no built-in app)")
    demo.set_defaults(func=cmd_demo)
    add_session_options(hub, hub=True)
    add_limit_options(hub)
    add_session_options(client, hub=False)
    for command in (hub, client, listing, status, console, relay):
        command.add_argument("--config", metavar="FILE", help="a TOML file with this command's options (see README)")
    return parser


def add_passphrase_option(parser: argparse.ArgumentParser, what: str) -> None:
    # The variable's name is comtunnel.certs.PASSPHRASE_ENV, spelled out so parsing imports no cryptography.
    parser.add_argument("--ca-passphrase-file", metavar="FILE", help=f"{what}; or set $COMTUNNEL_CA_PASSPHRASE")


def add_relay_ca_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--relay-ca",
        metavar="FILE",
        help="with --relay: verify the relay against the CAs in FILE instead of ca.crt (a relay run "
        "under a CA of its own; hubs are still verified against ca.crt only)",
    )


def add_serve_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--rfc2217",
        action="append",
        metavar="PORT=HOST:TCPPORT",
        help=f"{what} as an RFC 2217 (telnet COM-PORT-OPTION) server, e.g. pyserial rfc2217://",
    )
    parser.add_argument(
        "--raw", action="append", metavar="PORT=HOST:TCPPORT", help=f"{what} as plain TCP (socat, netcat)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --rfc2217/--raw listen on non-loopback addresses (they are plaintext)",
    )
    parser.add_argument(
        "--gateway-idle",
        type=idle_seconds,
        default=0.0,
        metavar="SECONDS",
        help="disconnect an --rfc2217/--raw client that sent nothing for this long, freeing the port "
        "(output from the device does not count; default 0: never)",
    )
    parser.add_argument(
        "--gateway-takeover",
        action="store_true",
        help="a new --rfc2217/--raw client takes the port from the connected one, which is disconnected "
        "(default: the new one is refused)",
    )


def add_session_options(parser: argparse.ArgumentParser, hub: bool) -> None:
    """Resumption and dead-link knobs (issue 4); defaults in comtunnel.protocol.limits."""
    from comtunnel.protocol.limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_GRACE, DEFAULT_REPLAY_BOUND

    if hub:
        parser.add_argument(
            "--grace",
            type=positive_float,
            default=DEFAULT_GRACE,
            metavar="SECONDS",
            help=f"keep a disconnected client's ports open this long for it to resume (default {DEFAULT_GRACE:g})",
        )
    parser.add_argument(
        "--replay-bound",
        type=byte_size,
        default=DEFAULT_REPLAY_BOUND,
        metavar="BYTES",
        help="per channel and direction, bytes kept for a resumed session (default 1M; k/M suffixes)",
    )
    parser.add_argument(
        "--dead-timeout",
        type=positive_float,
        default=DEFAULT_DEAD_TIMEOUT,
        metavar="SECONDS",
        help=f"drop a connection that has been silent this long, then resume (default {DEFAULT_DEAD_TIMEOUT:g})",
    )


def add_limit_options(parser: argparse.ArgumentParser, *, buffered: bool = True) -> None:
    """What the hub takes from the network (README, "Security model"); parsed in app.config."""
    parser.add_argument(
        "--max-startups",
        metavar="BEGIN:RATE:FULL",
        default="32:30:128",
        help="connections still in their TLS handshake: BEGIN always taken, then RATE%% of new ones "
        "dropped, rising to all at FULL, as OpenSSH's MaxStartups (default 32:30:128)",
    )
    parser.add_argument(
        "--max-startups-per-source",
        metavar="N",
        default=8,
        help="handshakes at once from one address (default 8)",
    )
    parser.add_argument("--max-sessions", metavar="N", default=256, help="authenticated connections (default 256)")
    parser.add_argument(
        "--handshake-timeout", metavar="SECONDS", default=5.0, help="time to finish the TLS handshake (default 5)"
    )
    if not buffered:
        return
    parser.add_argument(
        "--max-buffered",
        metavar="BYTES",
        default="16M",
        help="incomplete frames all connections together may hold (default 16M; k/M suffixes)",
    )


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def idle_seconds(text: str) -> float:
    """--gateway-idle: 0 (no timeout) or a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"expected 0 (no timeout) or a positive number of seconds, got {text!r}")
    return value


def byte_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, unit = (text[:-1], units[text[-1].lower()]) if text and text[-1].lower() in units else (text, 1)
    try:
        value = int(float(number) * unit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 1048576, 512k or 4M, got {text!r}") from None
    if not 64 * 1024 <= value <= 1 << 30:
        raise argparse.ArgumentTypeError(f"{text!r}: the replay bound must be between 64k and 1G")
    return value


CONFIG_TABLES = {"hub": frozenset({"access"})}


def config_validators(command: str) -> dict[str, Callable[[str], object]]:
    """Checks that make a bad config value name its key (the same parsers the commands use)."""
    from comtunnel.app.config import parse_assignment, parse_hostport

    hostport = lambda text: parse_hostport(text, default_host="0.0.0.0")  # noqa: E731
    checks: dict[str, Callable[[str], object]] = {"listen": hostport}
    if command == "hub":
        checks |= {"connect": parse_hostport, "port": lambda text: text == "auto" or parse_assignment(text, "DEVICE")}
    elif command != "relay":
        checks |= {"connect": parse_hostport}
    if command in ("hub", "client", "list", "console"):
        checks["relay"] = parse_hostport
    return checks


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> Any:
    from comtunnel.config import apply, config_path

    path = config_path(argv)
    if path is None:
        return None
    commands: dict[str, argparse.ArgumentParser] = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr,assignment]
    command = next((a for a in argv if not a.startswith("-") and a in commands), None)
    if command not in ("hub", "client", "list", "status", "console", "relay"):
        raise UsageError("--config works with hub, client, list, status, console and relay")
    return apply(
        commands[command], path, tables=CONFIG_TABLES.get(command, frozenset()), validators=config_validators(command)
    )
