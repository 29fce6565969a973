"""Counts by code written as words for people (console lines, stop lines, Markdown): never a Python
structure such as ``{'timeout': 3}`` or ``{}``. Light on purpose: the CLI imports it before any run."""

from __future__ import annotations

from collections.abc import Mapping


def counts_text(counts: Mapping[str, int], empty: str = "none") -> str:
    """Counts by code as people read them, most first: ``timeout 3, psk-key-mismatch 2`` (``empty`` for none)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{code} {n}" for code, n in ranked if n) or empty


def failures_text(failures: Mapping[str, int]) -> str:
    """``0 failures``, or ``3 failures (psk-key-mismatch 2, timeout 1)``: a server's stop line."""
    total = sum(failures.values())
    return f"{total} failures ({counts_text(failures)})" if total else "0 failures"
