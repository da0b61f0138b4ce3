"""Command line: the only place that parses arguments, installs signal handlers, and exits.

Every ComtunnelError becomes one line on stderr and its exit code; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from comtunnel import __version__
from comtunnel.errors import ComtunnelError, UsageError
from comtunnel.specs import shown_name

log = logging.getLogger("comtunnel")


# --- commands -----------------------------------------------------------------------------------


def cmd_certs_init(args: argparse.Namespace) -> int:
    from comtunnel.certs import ca_passphrase, init_certs

    passphrase = ca_passphrase(args.ca_passphrase_file)
    written = init_certs(
        Path(args.dir), args.hub_name, args.client or [], overwrite=args.force, ca_passphrase=passphrase
    )
    for path in written:
        print(path)
    return 0


def cmd_certs_client(args: argparse.Namespace) -> int:
    from comtunnel.certs import add_client, ca_passphrase

    for path in add_client(Path(args.dir), args.name, ca_passphrase=ca_passphrase(args.ca_passphrase_file)):
        print(path)
    return 0


def cmd_certs_revoke(args: argparse.Namespace) -> int:
    from comtunnel.certs import ca_passphrase, revoke

    crl, serial = revoke(Path(args.dir), args.name, ca_passphrase=ca_passphrase(args.ca_passphrase_file))
    print(f"revoked client {args.name!r} (certificate serial {serial:x}) in {crl}")
    print(f"a hub with --certs {args.dir} refuses it within seconds; elsewhere copy {crl.name} into the hub's --certs")
    return 0


def cmd_certs_hub(args: argparse.Namespace) -> int:
    from comtunnel.certs import ca_passphrase, replace_hub

    for path in replace_hub(Path(args.dir), args.hub_name, ca_passphrase=ca_passphrase(args.ca_passphrase_file)):
        print(path)
    print(f"hub names: {', '.join(args.hub_name)}")
    print("client certificates stay valid; restart the hub (or copy hub.crt and hub.key to it) to use the new pair")
    return 0


def cmd_certs_show(args: argparse.Namespace) -> int:
    import json

    from comtunnel.certinfo import format_certificates, show_certificates

    infos = show_certificates(Path(args.dir), args.name)
    print(json.dumps([i.as_json() for i in infos], indent=2) if args.json else format_certificates(infos))
    return 0


def cmd_hub(args: argparse.Namespace) -> int:
    from comtunnel.app.config import hub_config
    from comtunnel.app.hub import run_hub

    config = hub_config(vars(args), getattr(args, "config_tables", {}), source=str(args.config))
    return run_until_signal(lambda stop: run_hub(config, stop))


def cmd_client(args: argparse.Namespace) -> int:
    from comtunnel.app.client import run_client
    from comtunnel.app.config import client_config

    config = client_config(vars(args))
    return run_until_signal(lambda stop: run_client(config, stop))


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from comtunnel.aio.control import default_socket_path, fetch_status, format_status

    path = Path(args.socket) if args.socket else default_socket_path()
    first = fetch_status(path)
    if args.json:
        print(json.dumps(first, indent=2))
        return 0
    time.sleep(0.5)
    print(format_status(first, fetch_status(path)))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from comtunnel.aio.client import fetch_ports
    from comtunnel.aio.loop import run
    from comtunnel.app.config import parse_hostport
    from comtunnel.tls import client_context

    host, port = parse_hostport(args.connect)
    context = client_context(Path(args.certs), args.name)
    ports = run(fetch_ports(host, port, context, args.hub_name, timeout=args.connect_timeout))
    rows = [("PORT", "DEVICE", "STATE", "HELD BY", "SETTINGS")]
    rows += [
        (
            shown_name(p["name"]),
            _cell(p.get("device", "")),
            _cell(p.get("state", "")),
            _cell(p.get("holder") or "-"),
            _cell(p.get("settings") or "-"),
        )
        for p in ports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _cell(value: object) -> str:
    """What the hub said, as a table cell: no control characters, no terminal escapes."""
    text = value if isinstance(value, str) else str(value)
    return (text if text.isprintable() else repr(text))[:80]


def cmd_demo(args: argparse.Namespace) -> int:
    from comtunnel.demo import run_demo

    return run_until_signal(lambda stop: run_demo(stop, seconds=args.seconds, with_app=not args.no_app))


#: After a stop signal, how long the command may take to close down before it is cancelled.
FORCE_STOP_AFTER = 3.0


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main(stop)``; SIGINT/SIGTERM set ``stop``; a second SIGINT aborts at once.

    The exit code after SIGINT (Ctrl-C) is 130, as for any interrupted command; after SIGTERM 0,
    the clean stop systemd asks for. ``main`` must return promptly once ``stop`` is set; if it is
    still busy after FORCE_STOP_AFTER seconds it is cancelled.
    """
    from comtunnel.aio.loop import run

    signals: list[signal.Signals] = []

    async def wrapper() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.ensure_future(main(stop))

        def on_signal(sig: signal.Signals) -> None:
            signals.append(sig)
            if len(signals) > 1:
                if sig == signal.SIGINT:
                    raise SystemExit(130)
                return
            log.info("stopping (Ctrl-C again to force)")
            stop.set()
            loop.call_later(FORCE_STOP_AFTER, cancel)

        def cancel() -> None:
            if not task.done():
                log.warning("still stopping after %g s: cancelling what is left", FORCE_STOP_AFTER)
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await task
        except asyncio.CancelledError:
            if not signals:
                raise

    run(wrapper())
    return 130 if signal.SIGINT in signals[:1] else 0


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comtunnel",
        description="Serial ports over one mutual-TLS connection.",
    )
    parser.add_argument("--version", action="version", version=f"comtunnel {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    listing.add_argument("--connect", required=True, metavar="HOST:PORT")
    listing.add_argument("--certs", required=True, metavar="DIR")
    listing.add_argument("--name", required=True, help="this client's certificate name")
    listing.add_argument("--hub-name", metavar="NAME", help="the name to verify in the hub's certificate")
    listing.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=15.0,
        metavar="SECONDS",
        help="give up (exit 4) if the hub has not answered within this long (default 15)",
    )
    listing.set_defaults(func=cmd_list)

    status = sub.add_parser("status", help="show a running hub's sessions, channels, bytes and rates")
    status.add_argument("--socket", metavar="PATH", help="the hub's --control-socket (default: as the hub's)")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="emulated devices, hub and client on 127.0.0.1")
    demo.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--no-app", action="store_true", help="leave the virtual ports to you (no built-in app)")
    demo.set_defaults(func=cmd_demo)
    add_session_options(hub, hub=True)
    add_limit_options(hub)
    add_session_options(client, hub=False)
    for command in (hub, client, listing, status):
        command.add_argument("--config", metavar="FILE", help="a TOML file with this command's options (see README)")
    return parser


def add_passphrase_option(parser: argparse.ArgumentParser, what: str) -> None:
    # The variable's name is comtunnel.certs.PASSPHRASE_ENV, spelled out so parsing imports no cryptography.
    parser.add_argument("--ca-passphrase-file", metavar="FILE", help=f"{what}; or set $COMTUNNEL_CA_PASSPHRASE")


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


def add_limit_options(parser: argparse.ArgumentParser) -> None:
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


def setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


CONFIG_TABLES = {"hub": frozenset({"access"})}


def config_validators(command: str) -> dict[str, Callable[[str], object]]:
    """Checks that make a bad config value name its key (the same parsers the commands use)."""
    from comtunnel.app.config import parse_assignment, parse_hostport

    hostport = lambda text: parse_hostport(text, default_host="0.0.0.0")  # noqa: E731
    checks: dict[str, Callable[[str], object]] = {"listen": hostport}
    if command == "hub":
        checks |= {"connect": parse_hostport, "port": lambda text: text == "auto" or parse_assignment(text, "DEVICE")}
    else:
        checks |= {"connect": parse_hostport}
    return checks


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> Any:
    from comtunnel.config import apply, config_path

    path = config_path(argv)
    if path is None:
        return None
    commands: dict[str, argparse.ArgumentParser] = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr,assignment]
    command = next((a for a in argv if not a.startswith("-") and a in commands), None)
    if command not in ("hub", "client", "list", "status"):
        raise UsageError("--config works with hub, client, list and status")
    return apply(
        commands[command], path, tables=CONFIG_TABLES.get(command, frozenset()), validators=config_validators(command)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        applied = apply_config_file(parser, argv)
    except ComtunnelError as exc:
        print(f"comtunnel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    if applied is not None:
        applied.finish(args)
        args.config_tables = applied.tables
    setup_logging(args.verbose, args.quiet)
    func: Any = args.func
    try:
        return int(func(args))
    except ComtunnelError as exc:
        print(f"comtunnel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
