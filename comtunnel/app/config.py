"""The hub's and the client's configuration as values, parsed from option values.

The command line and a TOML file give the same option values (the TOML loader makes a file's
values the parser's defaults, see :mod:`comtunnel.config`), so one parser per value here serves
both, and a bad value in either says the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from comtunnel.access import AccessPolicy
from comtunnel.errors import UsageError
from comtunnel.policy.admission import DEFAULT_MAX_BUFFERED, AdmissionLimits
from comtunnel.policy.relay import RelayLimits
from comtunnel.ports.network import check_listen_address
from comtunnel.ports.open import PortSpec
from comtunnel.ports.unixsock import parse_endpoint
from comtunnel.protocol.limits import DEFAULT_DEAD_TIMEOUT, DEFAULT_GRACE, DEFAULT_REPLAY_BOUND
from comtunnel.protocol.settings import PortSettings, SettingsError, parse_line_settings
from comtunnel.specs import AttachSpec, LinkAccess, LinkSpec, ServeSpec, check_port_name

T = TypeVar("T", int, float)

HostPort = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    """Resumption and dead-link knobs, the same for hub and client."""

    replay_bound: int = DEFAULT_REPLAY_BOUND
    dead_timeout: float = DEFAULT_DEAD_TIMEOUT

    @property
    def ping_interval(self) -> float:
        """A third of the dead timeout (at most 5 s), so two lost pings still leave time for a third."""
        return min(5.0, self.dead_timeout / 3)

    def kwargs(self) -> dict[str, Any]:
        """As the keyword arguments of Hub and Client."""
        return {
            "replay_bound": self.replay_bound,
            "dead_timeout": self.dead_timeout,
            "ping_interval": self.ping_interval,
        }


@dataclasses.dataclass(frozen=True)
class HubConfig:
    certs: Path
    ports: list[PortSpec]
    listen: HostPort | None = None
    dial: list[HostPort] = dataclasses.field(default_factory=list)
    relay: list[HostPort] = dataclasses.field(default_factory=list)  # relays to register at (hub --relay)
    auto_ports: bool = False  # --port auto: serve whatever serial ports appear
    serve: list[ServeSpec] = dataclasses.field(default_factory=list)
    access: AccessPolicy | None = None
    crl: Path | None = None  # default: crl.pem in certs
    control_socket: Path | None = None  # default: comtunnel.aio.control.default_socket_path()
    control: bool = True
    metrics: HostPort | None = None
    grace: float = DEFAULT_GRACE
    session: SessionOptions = SessionOptions()
    admission: AdmissionLimits = dataclasses.field(default_factory=AdmissionLimits)
    max_buffered: int = DEFAULT_MAX_BUFFERED
    line_trace: Path | None = None  # --line-trace: every line operation applied to a device, timed


@dataclasses.dataclass(frozen=True)
class HubTarget:
    """One hub a client uses, and what it makes of that hub's ports."""

    host: str
    port: int
    label: str  # how --link HUB/PORT names it
    links: list[LinkSpec] = dataclasses.field(default_factory=list)
    attach: list[AttachSpec] = dataclasses.field(default_factory=list)
    serve: list[ServeSpec] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    certs: Path
    name: str
    hubs: list[HubTarget]
    listen: HostPort | None = None  # the hub dials us (hub --connect)
    relay: HostPort | None = None  # both dial a relay (client --relay, hub --relay)
    relay_ca: Path | None = None  # the relay's CAs, if not ca.crt (client --relay-ca)
    hub_name: str | None = None
    link_dir: Path | None = None
    link_access: LinkAccess = dataclasses.field(
        default_factory=LinkAccess
    )  # --link-mode/--link-group/--link-owner: every link's default
    session: SessionOptions = SessionOptions()
    connect_timeout: float | None = None  # give up after this long without reaching the hub


#: What a console asks for when no settings are given: the usual rate of a board's console.
CONSOLE_SETTINGS = PortSettings(115200)


@dataclasses.dataclass(frozen=True)
class ConsoleConfig:
    """``comtunnel console``: one hub port on this process's stdin and stdout."""

    certs: Path
    name: str
    host: str
    port: int
    hub_port: str  # the hub's port name
    settings: PortSettings = CONSOLE_SETTINGS
    hub_name: str | None = None
    relay: bool = False  # host:port is a relay where the hub waits (console --relay)
    relay_ca: Path | None = None
    connect_timeout: float | None = None
    session: SessionOptions = SessionOptions()
    log: Path | None = None  # the trace file
    monitor: bool = False  # read-only: typed data is not sent, line commands are refused
    escape: bool | None = None  # escape keys; None: on a terminal only
    quiet: bool = False  # no banner or informational notices


# --- values -----------------------------------------------------------------------------------


def parse_hostport(text: str, *, default_host: str | None = None) -> HostPort:
    """'HOST:PORT', '[::1]:PORT' or, with a default host, ':PORT' / 'PORT'."""
    host, sep, port = text.rpartition(":")
    if not sep and default_host is not None:
        host, port = default_host, text
    host = host.strip("[]") or (default_host or "")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_assignment(text: str, what: str) -> tuple[str, str, PortSettings | None]:
    """'NAME=VALUE[,settings]' as used by --port, --link and --attach."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"expected NAME={what}, got {text!r}")
    check_port_name(name)
    value, _, settings = rest.partition(",")
    try:
        return name, value, parse_line_settings(settings) if settings else None
    except SettingsError as exc:
        raise UsageError(f"{text!r}: {exc}") from None


def split_link_access(text: str) -> tuple[str, LinkAccess]:
    """``PORT=PATH[,settings][,mode=0660][,group=NAME][,owner=NAME]``: the access items taken out."""
    kept, values = [], {}
    head, *items = text.split(",")
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            kept.append(item)
            continue
        if key not in ("mode", "group", "owner") or not value:
            raise UsageError(f"--link {text!r}: unknown option {item!r} (use mode=, group= and owner=)")
        values[key] = value
    mode = parse_mode(values["mode"], f"--link {text!r}") if "mode" in values else None
    return ",".join([head, *kept]), LinkAccess(mode, values.get("group"), values.get("owner"))


def parse_mode(text: str, where: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise UsageError(f"{where}: mode must be octal, like 0660, not {text!r}") from None
    if mode & ~0o666:
        raise UsageError(f"{where}: mode {text} must be read/write bits only, like 0660")
    return mode


def hub_labels(hubs: list[HostPort]) -> list[str]:
    """How --link etc. name a hub when there are several: its host, or host:port if hosts repeat."""
    hosts = [h for h, _ in hubs]
    return [h if hosts.count(h) == 1 else f"{h}:{p}" for h, p in hubs]


def qualified(item: str, labels: list[str], option: str) -> tuple[str, str]:
    """Split 'HUB/PORT=...' into the hub label and 'PORT=...'; unqualified is fine with one hub."""
    head, sep, _ = item.partition("=")
    label, slash, port = head.rpartition("/")
    if not slash:
        if len(labels) > 1:
            raise UsageError(
                f"{option} {item!r}: with several hubs, name the hub: HUB/PORT (hubs: {', '.join(labels)})"
            )
        return labels[0], item
    if label not in labels:
        raise UsageError(f"{option} {item!r}: no hub {label!r} among --connect ({', '.join(labels)})")
    return label, port + sep + item.partition("=")[2]


def parse_serve(options: Mapping[str, Any], labels: list[str] | None = None) -> list[tuple[str, ServeSpec]]:
    """--raw and --rfc2217 values: [HUB/]PORT=HOST:TCPPORT (or PORT=TCPPORT for 127.0.0.1), each with
    its hub's label ('' when there are no labels). --gateway-idle and --gateway-takeover apply to all."""
    idle = float(options.get("gateway_idle") or 0.0)
    if not 0 <= idle < 1e6:
        raise UsageError(f"--gateway-idle must be 0 (none) or a positive number of seconds, got {idle:g}")
    takeover = bool(options.get("gateway_takeover"))
    specs = []
    for protocol in ("raw", "rfc2217"):
        for item in options.get(protocol) or []:
            label = ""
            if labels is not None:
                label, item = qualified(item, labels, f"--{protocol}")
            name, _, address = item.partition("=")
            if not name or not address:
                raise UsageError(f"expected --{protocol} PORT=HOST:TCPPORT, got {item!r}")
            check_port_name(name)
            if address.startswith("unix:"):
                unix = parse_endpoint(address)
                spec = ServeSpec(
                    name,
                    "unix",
                    0,
                    protocol,
                    idle,
                    takeover,
                    unix_path=unix.path,
                    unix_mode=unix.mode,
                    unix_group=unix.group,
                )
                specs.append((label, spec))
                continue
            host, tcp_port = parse_hostport(address, default_host="127.0.0.1")
            check_listen_address(host, bool(options.get("allow_remote")), f"--{protocol} {name}")
            specs.append((label, ServeSpec(name, host, tcp_port, protocol, idle_timeout=idle, takeover=takeover)))
    return specs


def session_options(options: Mapping[str, Any]) -> SessionOptions:
    return SessionOptions(
        replay_bound=options.get("replay_bound", DEFAULT_REPLAY_BOUND),
        dead_timeout=options.get("dead_timeout", DEFAULT_DEAD_TIMEOUT),
    )


# --- commands ---------------------------------------------------------------------------------


def hub_config(options: Mapping[str, Any], tables: Mapping[str, Any] | None = None, source: str = "") -> HubConfig:
    """The hub's config from option values (argparse's, which a TOML file may have set) and the
    file's tables (``[access]``)."""
    if not options.get("listen") and not options.get("connect") and not options.get("relay"):
        raise UsageError(
            "give --listen HOST:PORT, --connect HOST:PORT to dial a listening client, or --relay HOST:PORT"
        )
    specs: list[PortSpec] = []
    auto = False
    for item in options.get("port") or []:
        if item == "auto":
            auto = True
            continue
        name, _, _ = parse_assignment(item, "DEVICE")
        if any(s.name == name for s in specs):
            raise UsageError(f"port {name!r} is given twice")
        specs.append(PortSpec(name, item.partition("=")[2]))
    if not specs and not auto:
        raise UsageError("give at least one --port NAME=DEVICE, or --port auto")
    metrics = parse_hostport(options["metrics"], default_host="127.0.0.1") if options.get("metrics") else None
    if metrics is not None:
        check_listen_address(metrics[0], bool(options.get("allow_remote")), "--metrics")
    access = None
    if tables and "access" in tables:
        access = AccessPolicy.from_table(tables["access"], source=source)
    socket = options.get("control_socket")
    return HubConfig(
        certs=Path(options["certs"]),
        ports=specs,
        listen=parse_hostport(options["listen"], default_host="0.0.0.0") if options.get("listen") else None,
        dial=[parse_hostport(item) for item in options.get("connect") or []],
        relay=[parse_hostport(item) for item in options.get("relay") or []],
        auto_ports=auto,
        serve=[spec for _, spec in parse_serve(options)],
        access=access,
        crl=Path(options["crl"]) if options.get("crl") else None,
        control_socket=Path(socket) if socket and socket != "none" else None,
        control=socket != "none",
        metrics=metrics,
        grace=options.get("grace", DEFAULT_GRACE),
        session=session_options(options),
        admission=admission_limits(options),
        max_buffered=_size(options.get("max_buffered", "16M"), "--max-buffered", 1 << 20, 1 << 32),
        line_trace=Path(options["line_trace"]) if options.get("line_trace") else None,
    )


def admission_limits(options: Mapping[str, Any]) -> AdmissionLimits:
    """--max-startups BEGIN:RATE:FULL and the other connection limits, from the CLI or a TOML file."""
    startups = str(options.get("max_startups", "32:30:128"))
    parts = startups.split(":")
    try:
        begin, rate, full = int(parts[0]), int(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise UsageError(f"--max-startups: expected BEGIN:RATE:FULL such as 32:30:128, got {startups!r}") from None
    defaults = AdmissionLimits()
    try:
        return AdmissionLimits(
            begin=begin,
            rate=rate / 100,
            full=full,
            per_source=_number(options, "max_startups_per_source", int, defaults.per_source),
            sessions=_number(options, "max_sessions", int, defaults.sessions),
            handshake_timeout=_number(options, "handshake_timeout", float, defaults.handshake_timeout),
        )
    except ValueError as exc:
        raise UsageError(f"connection limits: {exc}") from None


def _number(options: Mapping[str, Any], key: str, kind: Callable[[Any], T], default: T) -> T:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise UsageError(f"--{key.replace('_', '-')}: expected a number, got {raw!r}") from None


def _size(value: object, option: str, low: int, high: int) -> int:
    text = str(value)
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, unit = (text[:-1], units[text[-1].lower()]) if text and text[-1].lower() in units else (text, 1)
    try:
        size = int(float(number) * unit)
    except ValueError:
        raise UsageError(f"{option}: expected a size like 16M or 65536, got {text!r}") from None
    if not low <= size <= high:
        raise UsageError(f"{option}: {text!r} is out of range")
    return size


def client_config(options: Mapping[str, Any]) -> ClientConfig:
    connect, listen, relay = options.get("connect") or [], options.get("listen"), options.get("relay")
    if [bool(connect), bool(listen), bool(relay)].count(True) != 1:
        raise UsageError(
            "give one of --connect HOST:PORT (dial the hub), --listen HOST:PORT (the hub dials us) "
            "or --relay HOST:PORT (meet the hub at a relay)"
        )
    if (listen or relay) and not options.get("hub_name"):
        option = "--listen" if listen else "--relay"
        raise UsageError(f"with {option}, give --hub-name NAME: a name in the hub's certificate, to verify it")
    addresses = [parse_hostport(item) for item in connect] or [parse_hostport(relay) if relay else ("", 0)]
    labels = hub_labels(addresses) if not relay else [options["hub_name"]]
    hubs = {label: HubTarget(host, port, label) for (host, port), label in zip(addresses, labels, strict=True)}
    for item in options.get("link") or []:
        label, rest = qualified(item, labels, "--link")
        rest, access = split_link_access(rest)
        name, path, settings = parse_assignment(rest, "PATH")
        hubs[label].links.append(LinkSpec(name, Path(path), settings or PortSettings(), access))
    for item in options.get("attach") or []:
        label, rest = qualified(item, labels, "--attach")
        name, device, settings = parse_assignment(rest, "DEVICE")
        hubs[label].attach.append(AttachSpec(name, device, settings or PortSettings()))
    for label, spec in parse_serve(options, labels):
        hubs[label].serve.append(spec)
    return ClientConfig(
        certs=Path(options["certs"]),
        name=options["name"],
        hubs=list(hubs.values()),
        listen=parse_hostport(listen, default_host="0.0.0.0") if listen else None,
        relay=parse_hostport(relay) if relay else None,
        relay_ca=relay_ca_option(options),
        hub_name=options.get("hub_name"),
        link_dir=Path(options["link_dir"]) if options.get("link_dir") else None,
        link_access=LinkAccess(
            parse_mode(options["link_mode"], "--link-mode") if options.get("link_mode") else None,
            options.get("link_group") or None,
            options.get("link_owner") or None,
        ),
        session=session_options(options),
        connect_timeout=connect_timeout(options),
    )


def connect_timeout(options: Mapping[str, Any]) -> float | None:
    """--connect-timeout SECONDS (a TOML file may give a number): None means keep trying."""
    if options.get("connect_timeout") is None:
        return None
    value = _number(options, "connect_timeout", float, 0.0)
    if not 0 < value < 1e6:
        raise UsageError(f"--connect-timeout: expected a positive number of seconds, got {value:g}")
    return value


def relay_ca_option(options: Mapping[str, Any]) -> Path | None:
    """``--relay-ca FILE``, which only means something with ``--relay``."""
    if not options.get("relay_ca"):
        return None
    if not options.get("relay"):
        raise UsageError("--relay-ca FILE verifies a relay: give it with --relay HOST:PORT")
    return Path(options["relay_ca"])


def console_config(options: Mapping[str, Any]) -> ConsoleConfig:
    """``PORT[,SETTINGS]`` and the connection options ``list`` takes."""
    if options.get("connect") and options.get("relay"):
        raise UsageError("console: give --connect HOST:PORT (the hub) or --relay HOST:PORT, not both")
    where = ("relay", "hub_name") if options.get("relay") else ("connect",)
    missing = [f"--{key.replace('_', '-')}" for key in (*where, "certs", "name") if not options.get(key)]
    if missing:
        raise UsageError(f"console needs {', '.join(missing)}")
    host, port = parse_hostport(options[where[0]])
    name, _, text = str(options["port"]).partition(",")
    check_port_name(name)
    try:
        settings = parse_line_settings(text, CONSOLE_SETTINGS) if text else CONSOLE_SETTINGS
    except SettingsError as exc:
        raise UsageError(f"console {options['port']!r}: {exc}") from None
    return ConsoleConfig(
        certs=Path(options["certs"]),
        name=options["name"],
        host=host,
        port=port,
        hub_port=name,
        settings=settings,
        hub_name=options.get("hub_name"),
        relay=bool(options.get("relay")),
        relay_ca=relay_ca_option(options),
        connect_timeout=connect_timeout(options),
        session=session_options(options),
        log=Path(options["log"]) if options.get("log") else None,
        monitor=bool(options.get("monitor")),
        escape=options.get("escape"),
        quiet=bool(options.get("quiet") or options.get("sub_quiet")),
    )


@dataclasses.dataclass(frozen=True)
class RelayConfig:
    certs: Path
    listen: HostPort
    relay_ca: Path | None = None  # CAs admitted besides ca.crt in certs
    control_socket: Path | None = None  # default: relay.sock in comtunnel.aio.control.runtime_directory()
    control: bool = True
    limits: RelayLimits = dataclasses.field(default_factory=RelayLimits)


def relay_config(options: Mapping[str, Any]) -> RelayConfig:
    if not options.get("listen"):
        raise UsageError("give --listen HOST:PORT: where hubs and clients reach the relay")
    socket = options.get("control_socket")
    idle = _number(options, "idle_timeout", float, RelayLimits().idle_timeout)
    try:
        limits = RelayLimits(idle_timeout=idle, admission=admission_limits(options))
    except ValueError as exc:
        raise UsageError(f"relay limits: {exc}") from None
    return RelayConfig(
        certs=Path(options["certs"]),
        listen=parse_hostport(options["listen"], default_host="0.0.0.0"),
        relay_ca=Path(options["relay_ca"]) if options.get("relay_ca") else None,
        control_socket=Path(socket) if socket and socket != "none" else None,
        control=socket != "none",
        limits=limits,
    )
