"""The ``loadgen`` command: run, serve, validate, capacity, report, compare, impair, locustfile.

One module per command group (:mod:`.run`, :mod:`.serve`, :mod:`.capacity`, :mod:`.compare`, :mod:`.impair`), the
options they share (:mod:`.keys`, :mod:`.outputs`, :mod:`.argtypes`), the parser (:mod:`.parser`,
:mod:`.help`). Errors in user input end with a one-line message naming the place and exit status
2; never a traceback. Every exit status is in the README's "Exit status" table (:mod:`.exit_status`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from loadgen.cli.capacity import capacity_command, report_command
from loadgen.cli.compare import compare_command
from loadgen.cli.exit_status import EXIT_INTERRUPTED, EXIT_USAGE
from loadgen.cli.impair import impair_command
from loadgen.cli.parser import build_parser
from loadgen.cli.run import locustfile_command, run_command, validate_command
from loadgen.cli.serve import serve_command
from loadgen.protocol.errors import ConfigError

#: What each command does with its parsed arguments; returns its exit status.
COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = MappingProxyType({
    "serve": serve_command, "run": run_command, "locustfile": locustfile_command, "validate": validate_command,
    "capacity": capacity_command, "report": report_command, "compare": compare_command, "impair": impair_command,
})


def main(argv: Sequence[str] | None = None) -> int:
    """The ``loadgen`` command; returns its exit status (the README's "Exit status" table)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `loadgen` alone: what there is to do, and nothing done (a usage error, as argparse's)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"loadgen: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
