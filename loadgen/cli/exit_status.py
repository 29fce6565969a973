"""The ``loadgen`` command's exit statuses: every one is in the README's "Exit status" table."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2
EXIT_THRESHOLD = 1  # a threshold failed (or the default --exit-code-on-error)
EXIT_INTERRUPTED = 130  # Ctrl-C outside a run (a run stopped by Ctrl-C ends normally and writes its results)


def exit_status(text: str) -> int:
    """An argparse type: an exit status, 0..255 (``--exit-code-on-error``)."""
    if not text.isdigit() or int(text) > 255:
        raise argparse.ArgumentTypeError(f"expected an exit status 0..255, got {text!r}")
    return int(text)
