"""argparse types of the ``loadgen`` command: positive numbers and durations.

Each raises :class:`argparse.ArgumentTypeError`, so a bad value ends in argparse's one-line
usage error (exit 2) that names the option.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from loadgen.scenario.syntax import parse_duration

_N = TypeVar("_N", int, float)


def positive(kind: type[_N]) -> Callable[[str], _N]:
    """An argparse type: a number of ``kind`` that must be > 0."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def duration(text: str) -> float:
    """Seconds (argparse type) from a scenario's syntax (``10``, ``10s``, ``500ms``, ``2m``, ``1.5h``) or
    Locust's ``-t`` syntax, which chains units (``1h30m``, ``2m30s``); a bare number is seconds."""
    value = parse_duration(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s, 500ms, 2m or 1h30m, got {text!r}")
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return value
