"""The whole ``loadgen`` command line, assembled from one module per command group."""

from __future__ import annotations

import argparse

from loadgen.cli.capacity import add_capacity_parsers
from loadgen.cli.compare import add_compare_parser
from loadgen.cli.help import EXAMPLES, HelpFormatter, parsers, version
from loadgen.cli.impair import add_impair_parser
from loadgen.cli.run import add_run_parser, add_validate_parser
from loadgen.cli.serve import add_serve_parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; every option's help ends with its default (see :class:`HelpFormatter`)."""
    parser = argparse.ArgumentParser(prog="loadgen", epilog=EXAMPLES,
                                     description="A load generator for DTLS and TLS services.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"loadgen {version()}",
                        help="print loadgen's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    add_serve_parser(sub)
    add_run_parser(sub)
    add_capacity_parsers(sub)  # capacity, report
    add_compare_parser(sub)
    add_validate_parser(sub)  # locustfile, validate
    add_impair_parser(sub)
    for each in parsers(parser):
        each.formatter_class = HelpFormatter
    return parser
