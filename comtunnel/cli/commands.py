"""What each command does, from its parsed arguments: build a config, run the application module
(:mod:`comtunnel.app`) until a signal stops it, print what the user asked for."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from comtunnel.errors import UsageError
from comtunnel.specs import shown_name

log = logging.getLogger("comtunnel")


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


def cmd_certs_relay(args: argparse.Namespace) -> int:
    from comtunnel.certs import ca_passphrase, issue_relay

    for path in issue_relay(Path(args.dir), args.relay_name, ca_passphrase=ca_passphrase(args.ca_passphrase_file)):
        print(path)
    print(f"relay names: {', '.join(args.relay_name)}; copy ca.crt, relay.crt and relay.key to the relay")
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


def cmd_console(args: argparse.Namespace) -> int:
    from comtunnel.app.config import console_config
    from comtunnel.app.console import run_console

    config = console_config(vars(args))
    if not (args.verbose + args.sub_verbose):  # a terminal session: warnings only, unless asked
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    return run_until_signal(lambda stop: run_console(config, stop), extra_signals=(signal.SIGHUP,))


def cmd_relay(args: argparse.Namespace) -> int:
    from comtunnel.app.config import relay_config
    from comtunnel.app.relay import run_relay

    config = relay_config(vars(args))
    return run_until_signal(lambda stop: run_relay(config, stop))


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from comtunnel.aio.control import default_socket_path, fetch_status, format_status

    path = Path(args.socket) if args.socket else default_socket_path()
    first = fetch_status(path)
    if args.json:
        print(json.dumps(first, indent=2))
        return 0
    if not args.watch:
        time.sleep(0.5)
        print(format_status(first, fetch_status(path)))
        return 0
    in_place = sys.stdout.isatty()
    while True:  # until Ctrl-C (exit 130) or the hub goes away (exit 4)
        time.sleep(args.watch)
        second = fetch_status(path)
        text = format_status(first, second)
        print(("\x1b[H\x1b[2J" if in_place else "\n") + text, flush=True)
        first = second


def cmd_list(args: argparse.Namespace) -> int:
    from comtunnel.aio.client import fetch_ports
    from comtunnel.aio.loop import run
    from comtunnel.app.config import parse_hostport, relay_ca_option
    from comtunnel.tls import client_context

    if args.local:
        return _list_local()
    where = ("--hub-name", args.hub_name) if args.relay else ("--connect", args.connect)
    needed = [where, ("--certs", args.certs), ("--name", args.name)]
    missing = [option for option, value in needed if not value]
    if missing:
        raise UsageError(f"list needs {', '.join(missing)} (or --local, for the clients running here)")
    host, port = parse_hostport(args.relay or args.connect)
    relay_ca = relay_ca_option(vars(args))
    context = client_context(Path(args.certs), args.name)
    dialer = None
    if args.relay:
        from comtunnel.aio.relay_link import relay_dialer

        dialer = relay_dialer(host, port, Path(args.certs), args.name, args.hub_name, relay_ca)
    ports = run(fetch_ports(host, port, context, args.hub_name, timeout=args.connect_timeout, dialer=dialer))
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


def _list_local() -> int:
    """The clients running here, from their status sockets: each local port and where it leads."""
    from comtunnel.aio.control import client_sockets, fetch_status, runtime_directory
    from comtunnel.errors import PeerError

    rows = [("LINK", "PTY", "HUB", "PORT", "STATE", "SETTINGS", "APP")]
    for path in client_sockets():
        try:
            status = fetch_status(path, timeout=2.0)
        except PeerError:
            continue  # a client that has gone: its socket is left behind
        for hub in status.get("hubs", []):
            for port in hub.get("ports", []):
                rows.append(
                    (
                        _cell(port.get("local", "")),
                        _cell(port.get("pty") or "-"),
                        _cell(hub.get("hub", "")),
                        _cell(port.get("port", "")),
                        _cell(port.get("state", "")),
                        _cell(port.get("settings", "")),
                        "open" if port.get("app_open") else "-",
                    )
                )
    if len(rows) == 1:
        print(f"no comtunnel client is running here (no status socket in {runtime_directory()})")
        return 0
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


def run_until_signal(
    main: Callable[[asyncio.Event], Awaitable[None]], extra_signals: tuple[signal.Signals, ...] = ()
) -> int:
    """Run ``main(stop)``; SIGINT/SIGTERM (and ``extra_signals``) set ``stop``; a second SIGINT
    aborts at once.

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

        for sig in (signal.SIGINT, signal.SIGTERM, *extra_signals):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await task
        except asyncio.CancelledError:
            if not signals:
                raise

    run(wrapper())
    return 130 if signal.SIGINT in signals[:1] else 0
