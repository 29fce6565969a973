"""How the ``loadgen`` command explains itself: the examples, the help formatter, the version."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

#: ``loadgen`` alone, and ``loadgen --help``: an example per command.
EXAMPLES = """\
examples:
  loadgen run scenarios/quickstart.yaml               a headless run (results under results/<run-id>/)
  loadgen run scenarios/quickstart.yaml -u 500 -t 1m  the same with 500 clients for a minute
  loadgen run scenarios/quickstart.yaml --web         Locust's web UI at http://127.0.0.1:8089
  loadgen validate scenarios/multi-peer.yaml          check a scenario without running it
  loadgen serve dtls --port 5684 --psk-env MY_PSK     the reference DTLS server
  loadgen serve tls --scenario scenarios/tls.yaml     the TLS server scenarios/tls.yaml expects
  loadgen capacity scenarios/quickstart.yaml          step the load up, find the knee
  loadgen report results/<run-id>                     rebuild a run's report.html
  loadgen compare results/<run-a> results/<run-b>     did B get worse than A? (exit 1 on a regression)
  loadgen impair --to 127.0.0.1:5684 --loss 0.05      a lossy network in front of a server
  locust -f "$(loadgen locustfile)" --scenario scenarios/quickstart.yaml
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and epilogs as written, and ends an option's help with its default
    unless the help names it already, there is none (None) or the option is a switch."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or "default" in text or text == argparse.SUPPRESS
                or action.default in (None, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it, depth first."""
    yield parser
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in dict.fromkeys(action.choices.values()):  # aliases share one parser
                yield from parsers(child)


def version() -> str:
    """loadgen's version: the installed package's metadata (pyproject.toml), else the module's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("loadgen")
    except PackageNotFoundError:
        from loadgen import __version__

        return __version__
