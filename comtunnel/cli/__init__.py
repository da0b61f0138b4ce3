"""Command line: the only place that parses arguments, installs signal handlers, and exits.

Every ComtunnelError becomes one line on stderr and its exit code; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from comtunnel.cli.parser import apply_config_file, build_parser
from comtunnel.errors import DETAIL, ComtunnelError

__all__ = ["build_parser", "main"]


def setup_logging(verbose: int, quiet: int) -> None:
    """No option: INFO. ``-v``: DETAIL (connections, TLS peers, every retry). ``-vv``: DEBUG (every
    event's kind as it arrives). ``-q``: warnings only; ``-qq``: errors."""
    logging.addLevelName(DETAIL, "DETAIL")
    level = (logging.INFO, DETAIL, logging.DEBUG)[min(verbose, 2)] if verbose else logging.INFO + 10 * quiet
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
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
    setup_logging(args.verbose + args.sub_verbose, args.quiet + args.sub_quiet)
    func: Any = args.func
    try:
        return int(func(args))
    except ComtunnelError as exc:
        print(f"comtunnel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
