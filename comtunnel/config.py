"""TOML config files for hub, client, list, status and console: every command-line option has a key.

A key is the long option without its dashes' prefix (``listen``, ``link-dir``, ``allow-remote``);
repeatable options take an array (or a single string), flags take booleans. Values from the file
become the options' defaults, so the command line still overrides them (for a repeatable option the
command line's list replaces the file's). The key set is read from the argument parser itself, so
new options get keys without anyone remembering to add them. Tables other than the command's own
(``[access]`` for the hub) are refused, as are unknown keys, with the nearest known key suggested.
Relative paths in a file are taken from the file's directory, not from wherever the command runs.
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comtunnel.errors import ComtunnelError, ConfigError

#: Per key, a check run on each value (raising ComtunnelError), so a bad value names its key.
Validators = dict[str, Callable[[str], object]]

#: Keys whose value is a path, and keys whose values are NAME=PATH[,settings].
PATH_KEYS = frozenset({"certs", "crl", "control-socket", "line-trace", "link-dir", "log", "relay-ca", "socket"})
ASSIGNED_PATH_KEYS = frozenset({"link"})


def load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def config_path(argv: list[str]) -> Path | None:
    """--config FILE or --config=FILE, found before argparse runs (its values become defaults)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.partition("=")[2])
    return None


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            out[longs[0][2:]] = action
    return out


class Applied:
    """What a config file set: remembered so the command line's repeatable options replace, not extend."""

    def __init__(self, path: Path, tables: dict[str, Any]) -> None:
        self.path = path
        self.tables = tables
        self.lists: dict[str, list[str]] = {}  # dest -> the file's list

    def finish(self, args: argparse.Namespace) -> None:
        for dest, from_file in self.lists.items():
            value = getattr(args, dest)
            if isinstance(value, list) and len(value) > len(from_file) and value[: len(from_file)] == from_file:
                setattr(args, dest, value[len(from_file) :])


def apply(
    parser: argparse.ArgumentParser,
    path: Path,
    *,
    tables: frozenset[str] = frozenset(),
    validators: Validators | None = None,
) -> Applied:
    """Make the file's values the defaults of ``parser``'s options; returns the allowed tables."""
    data = load(path)
    options = _options(parser)
    options.pop("config", None)
    applied = Applied(path, {k: v for k, v in data.items() if k in tables})
    for key, value in data.items():
        if key in tables:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key!r} must be a table ([{key}])")
            continue
        action = options.get(key)
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(key, [*options, *tables])}")
        default = _convert(path, key, action, _relative_to(path.parent, key, value), (validators or {}).get(key))
        action.default = default
        action.required = False
        if isinstance(action, argparse._AppendAction):
            applied.lists[action.dest] = list(default)
    return applied


def _convert(
    path: Path, key: str, action: argparse.Action, value: Any, validate: Callable[[str], object] | None
) -> Any:
    where = f"{path}: key {key!r}"
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            example = action.metavar or "VALUE"
            raise ConfigError(f'{where} must be a list of strings like "{example}"')
        for item in items:
            _check(where, item, action, validate)
        return list(items)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where} must be a string or a number, not {type(value).__name__}")
    return _check(where, str(value), action, validate)


def _check(where: str, text: str, action: argparse.Action, validate: Callable[[str], object] | None) -> Any:
    try:
        converted = action.type(text) if callable(action.type) else text
        if validate is not None:
            validate(text)
    except (argparse.ArgumentTypeError, ValueError, ComtunnelError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}")
    return converted


def _relative_to(directory: Path, key: str, value: Any) -> Any:
    """A relative path in the file, made relative to the file's directory."""

    def anchor(text: str) -> str:
        return text if text == "none" or Path(text).is_absolute() else str(directory / text)

    if key in PATH_KEYS and isinstance(value, str) and value:
        return anchor(value)
    if key in ASSIGNED_PATH_KEYS:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(v, str) for v in items):
            out = []
            for item in items:
                name, sep, rest = item.partition("=")
                target, comma, settings = rest.partition(",")
                out.append(f"{name}{sep}{anchor(target)}{comma}{settings}" if sep and target else item)
            return out
    return value


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (keys: {', '.join(sorted(known))})"
