"""``comtunnel console``: one hub port straight on this process's stdin and stdout.

The console is a :class:`Client` with one local port, a :class:`StdioPort`, instead of a PTY, so
resumption, ordering and flow control are the client's own: a DTR toggle or a settings change
typed after some bytes reaches the device after them, and a dropped connection resumes with
nothing lost. On a terminal, stdin is put in raw mode (restored on every way out: quit, end of
input, a signal, an error) and Ctrl-] starts an escape command (:mod:`comtunnel.protocol.escape`).
On pipes the streams are plain bytes and the console leaves once stdin closes and every byte
read from it has reached the device (the hub returned credit for it).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import datetime as dt
import logging
import os
import select
import termios
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from comtunnel.aio.client import Client, ClientChannel
from comtunnel.aio.client.ports import LocalPort
from comtunnel.app.config import ConsoleConfig
from comtunnel.errors import UsageError
from comtunnel.ports.stdio import StdioPort
from comtunnel.protocol import events as ev
from comtunnel.protocol.escape import ESCAPE_NAME, HELP, Command, Echo, EscapeParser, Item, SetSettings, Unknown
from comtunnel.protocol.settings import ControlRequest, PortSettings, SettingsError, parse_line_settings
from comtunnel.tls import client_context

log = logging.getLogger(__name__)

#: How long BREAK is held (a common default: pyserial's send_break, Linux tcsendbreak's 0.25 s).
BREAK_SECONDS = 0.25
#: On the way out, how long the device's last output may take to reach stdout.
FLUSH_TIMEOUT = 2.0
PREFIX = "comtunnel: "


async def run_console(config: ConsoleConfig, stop: asyncio.Event, *, stdin: int = 0, stdout: int = 1) -> None:
    interactive = os.isatty(stdin) and os.isatty(stdout)
    escape = config.escape if config.escape is not None else interactive
    with raw_terminal(stdin if interactive else None), _trace_file(config.log) as trace:
        _console_logging(interactive)
        console = Console(config, stdin, stdout, interactive=interactive, escape=escape, trace=trace)
        await console.run(stop)


@contextlib.contextmanager
def raw_terminal(fd: int | None) -> Iterator[None]:
    """Raw mode on ``fd`` (no echo, no signals, no CR/LF translation) until the block ends, however."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keys typed already are kept
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _console_logging(interactive: bool) -> None:
    """Log lines look like the console's notices; in raw mode a bare LF only moves down, so they
    end with CR LF there."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setFormatter(logging.Formatter(f"{PREFIX}%(message)s"))
            if interactive:
                handler.terminator = "\r\n"


class _Trace:
    """A ser2net-style trace: one line per chunk, ``TIME DIRECTION LENGTH BYTES``; ``out`` goes to
    the device, ``in`` comes from it; bytes as in a Python bytes literal (``AT\\r\\n``, ``\\x1b``)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def __call__(self, direction: str, data: bytes) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        escaped: bytes = codecs.escape_encode(data)[0]
        self.handle.write(b"%s %-3s %6d %s\n" % (stamp.encode(), direction.encode(), len(data), escaped))
        self.handle.flush()


@contextlib.contextmanager
def _trace_file(path: Path | None) -> Iterator[_Trace | None]:
    if path is None:
        yield None
        return
    try:
        handle = path.open("ab")
    except OSError as exc:
        raise UsageError(f"--log {path}: {exc.strerror}") from None
    with handle:
        yield _Trace(handle)


class _ConsoleClient(Client):
    """The client, telling the console what the hub says (on top of what the client does with it)."""

    console: Console

    def tunnel_event(self, event: ev.Event) -> None:
        super().tunnel_event(event)
        self.console.hub_event(event)

    def tunnel_lost(self, exc: BaseException | None) -> None:
        super().tunnel_lost(exc)
        self.console.connection_lost()


class Console:
    def __init__(
        self,
        config: ConsoleConfig,
        stdin: int,
        stdout: int,
        *,
        interactive: bool,
        escape: bool,
        trace: _Trace | None,
    ) -> None:
        self.config = config
        self.interactive = interactive
        self.escape = escape
        self.dtr = self.rts = True  # raised when the channel opens, as for an attached device
        self.port = StdioPort(
            stdin=stdin,
            stdout=stdout,
            escape=EscapeParser() if escape else None,
            on_command=self.command,
            on_eof=self.input_ended,
            read_only=config.monitor,
            trace=trace,
        )
        dialer = None
        if config.relay:
            from comtunnel.aio.relay_link import relay_dialer

            assert config.hub_name is not None  # console_config requires it with --relay
            dialer = relay_dialer(config.host, config.port, config.certs, config.name, config.hub_name, config.relay_ca)
        self.client = _ConsoleClient(
            config.host,
            config.port,
            client_context(config.certs, config.name),
            given=[LocalPort(config.hub_port, self.port, config.settings)],
            server_hostname=config.hub_name,
            connect_timeout=config.connect_timeout,
            dialer=dialer,
            **config.session.kwargs(),
        )
        self.client.console = self
        self._done = asyncio.Event()  # quit, or the input ended and went out
        self._draining = False
        self._opened = False
        self._lost = False

    @property
    def channel(self) -> ClientChannel:
        return self.client.channels[self.config.hub_port]

    async def run(self, stop: asyncio.Event) -> None:
        self.banner()
        run = asyncio.ensure_future(self.client.run())
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._done.wait())]
        try:
            await asyncio.wait([run, *waits], return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.port.flush(), FLUSH_TIMEOUT)
        finally:
            for waiter in waits:
                waiter.cancel()
            self.client.stop()
            await asyncio.wait([run])
        run.result()

    # --- what the user sees --------------------------------------------------------------------

    def notice(self, text: str, *, info: bool = False) -> None:
        """One line on stderr (CR LF in raw mode); ``info`` lines are left out with -q."""
        if info and self.config.quiet:
            return
        end = "\r\n" if self.interactive else "\n"
        _write_stderr(f"\r{PREFIX}{text}{end}" if self.interactive else f"{PREFIX}{text}{end}")

    def banner(self) -> None:
        where = f"{self.config.hub_port} on {self.config.host}:{self.config.port}"
        keys = f"{ESCAPE_NAME} ? help, {ESCAPE_NAME} q quit" if self.escape else "no escape keys"
        mode = ", read only" if self.config.monitor else ""
        if self.interactive or self.escape:
            self.notice(f"console: {where} ({self.config.settings.short()}{mode}); {keys}", info=True)

    def state_line(self) -> str:
        channel = self.channel
        settings = channel.remote_settings or channel.settings
        return (
            f"{channel.name}: {channel.state.value}, {settings.short()}, DTR {_on(self.dtr)}, RTS {_on(self.rts)}, "
            f"modem {self.port.modem.describe()}, in {self.port.bytes_written} bytes, out {self.port.bytes_read} bytes"
        )

    # --- escape commands -----------------------------------------------------------------------

    def command(self, item: Item) -> None:
        match item:
            case Command.QUIT:
                self._done.set()
            case Command.SHOW_STATE:
                self.notice(self.state_line())
            case Command.HELP:
                self.notice(HELP)
            case Command.SETTINGS_PROMPT:
                _write_stderr(f"\r\n{PREFIX}settings (e.g. 115200,8N1), Enter: ")
            case Command.SETTINGS_CANCELLED:
                _write_stderr("\r\n")
                self.notice("settings unchanged")
            case Echo(text):
                _write_stderr(text)
            case SetSettings(text):
                _write_stderr("\r\n")
                self.change_settings(text)
            case Unknown(key):
                self.notice(f"no command {bytes([key])!r} after {ESCAPE_NAME}; {ESCAPE_NAME} ? lists them")
            case Command.BREAK | Command.TOGGLE_DTR | Command.TOGGLE_RTS:
                self.line_command(item)

    def line_command(self, command: Command) -> None:
        if not self._writable():
            return
        channel = self.channel
        if command is Command.BREAK:
            channel.app_control(ControlRequest(break_=True))
            asyncio.get_running_loop().call_later(BREAK_SECONDS, channel.app_control, ControlRequest(break_=False))
            self.notice(f"BREAK ({BREAK_SECONDS:g} s)")
        elif command is Command.TOGGLE_DTR:
            self.dtr = not self.dtr
            channel.app_control(ControlRequest(dtr=self.dtr))
            self.notice(f"DTR {_on(self.dtr)}")
        else:
            self.rts = not self.rts
            channel.app_control(ControlRequest(rts=self.rts))
            self.notice(f"RTS {_on(self.rts)}")

    def change_settings(self, text: str) -> None:
        if not text.strip():
            self.notice("settings unchanged")
            return
        channel = self.channel
        base = channel.remote_settings or channel.settings
        try:
            settings = parse_line_settings(text, base)
        except SettingsError as exc:
            self.notice(f"settings unchanged: {exc}")
            return
        if self._writable():
            channel.app_settings(settings)
            self.notice(f"asked for {settings.short()}")

    def _writable(self) -> bool:
        if self.config.monitor:
            self.notice("read only (--monitor): nothing sent")
            return False
        if self.channel.closed:
            self.notice(f"{self.channel.name} is not open ({self.channel.state.value}): nothing sent")
            return False
        return True

    # --- end of input: leave once what was read has reached the device --------------------------

    def input_ended(self) -> None:
        self._draining = True
        self._check_drained()

    def _check_drained(self) -> None:
        if not self._draining or self._done.is_set():
            return
        channel = self.channel
        if self.config.monitor or (
            channel.live and not channel.pending_bytes and not channel.tunnel.conn.unacknowledged(channel.channel)
        ):
            self._done.set()

    # --- what the hub says -----------------------------------------------------------------------

    def hub_event(self, event: ev.Event) -> None:
        match event:
            case ev.ChannelOpened(_, settings, info):
                self._opened_notice(settings, info)
            case ev.SettingsChanged(_, settings):
                self.notice(f"line settings now {settings.short()}", info=True)
            case ev.SessionResumed():
                if self._lost:
                    self._lost = False
                    self.notice("connection back: session resumed, nothing lost")
            case ev.ResumeRefused():
                self.notice("connection back, but the hub had ended the session: reopening the port")
        self._check_drained()

    def _opened_notice(self, settings: PortSettings, info: dict[str, Any]) -> None:
        monitor = info.get("access") == "monitor"
        if self._opened and not self._lost:
            return
        if self._lost:  # reopened after the session was lost
            self._lost = False
            self.notice(f"{self.config.hub_port} reopened ({settings.short()})")
        else:
            watching = "watching (monitor access)" if monitor else "open"
            self.notice(f"{self.config.hub_port} {watching} ({settings.short()})", info=True)
        if self.config.monitor and not monitor:
            self.notice("the hub gave this client full access: it holds the port, though nothing typed is sent")
        self._opened = True

    def connection_lost(self) -> None:
        """The client logs the loss itself (one warning line); the console says when it is back."""
        if self._opened:
            self._lost = True


def _on(value: bool) -> str:
    return "on" if value else "off"


def _write_stderr(text: str) -> None:
    """Small, rare lines: written whole even if stderr shares stdin's non-blocking terminal."""
    data = text.encode(errors="replace")
    while data:
        try:
            data = data[os.write(2, data) :]
        except BlockingIOError:
            select.select([], [2], [], 1.0)
        except OSError:
            return
