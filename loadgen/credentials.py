"""Pre-shared keys: where they come from and how thousands of devices share them.

A key is never printed: :class:`Secret` hides its value from ``repr``/``str`` so it
cannot leak through logs, reports or exception messages by accident.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class Secret:
    """Key bytes that print as ``Secret(<N bytes>)``."""

    value: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret(<{len(self.value)} bytes>)"

    __str__ = __repr__


def parse_hex(text: str, *, where: str = "key") -> Secret:
    """Parse a hex key (``0x`` prefix, spaces and colons allowed)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    try:
        value = bytes.fromhex(cleaned)
    except ValueError:
        # Do not echo the text: it may be a real key with one typo.
        raise ConfigError(f"{where}: not a hex string ({len(text)} characters)") from None
    if not value:
        raise ConfigError(f"{where}: empty key")
    return Secret(value)


def key_from_env(name: str) -> Secret:
    """Hex key from environment variable ``name``."""
    text = os.environ.get(name)
    if text is None:
        raise ConfigError(f"environment variable {name} is not set")
    return parse_hex(text, where=f"environment variable {name}")


def _read_key_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"key file {path} is readable by other users (chmod 600 it)", stacklevel=3)
    return data


def key_from_file(path: str | Path) -> Secret:
    """Key from a file: hex text if it parses as hex, raw bytes otherwise."""
    path = Path(path)
    data = _read_key_file(path)
    try:
        return parse_hex(data.decode("ascii"), where=f"key file {path}")
    except (UnicodeDecodeError, ConfigError):
        if not data:
            raise ConfigError(f"key file {path}: empty") from None
        return Secret(data)


def derive_key(master: Secret, identity: bytes, length: int = 16) -> Secret:
    """Per-device key = HMAC-SHA256(master, identity)[:length] (shared by client and server)."""
    if not 1 <= length <= 32:
        raise ConfigError(f"derived key length must be 1..32 bytes, got {length}")
    return Secret(hmac.new(master.value, identity, hashlib.sha256).digest()[:length])


class KeyStore:
    """Identity -> key, for both ends. Either a table, a derivation, or one shared key."""

    def __init__(
        self,
        *,
        table: Mapping[bytes, Secret] | None = None,
        master: Secret | None = None,
        derived_length: int = 16,
        shared: Secret | None = None,
    ) -> None:
        if sum(x is not None for x in (table, master, shared)) != 1:
            raise ValueError("give exactly one of table, master, shared")
        self._table = dict(table) if table is not None else None
        self._master = master
        self._length = derived_length
        self._shared = shared

    @classmethod
    def from_csv(cls, path: str | Path) -> KeyStore:
        """A CSV of ``identity,hex-key`` rows (a header row ``identity,key`` is allowed)."""
        path = Path(path)
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a BOM, which would otherwise
        # hide the header row or become part of the first identity.
        text = _read_key_file(path).decode("utf-8-sig", "replace")
        table: dict[bytes, Secret] = {}
        for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or row[0].startswith("#") or (lineno == 1 and row[0].strip() == "identity"):
                continue
            if len(row) != 2:
                raise ConfigError(f"{path}:{lineno}: expected 'identity,hex-key'")
            ident = row[0].strip().encode()
            if ident in table:
                raise ConfigError(f"{path}:{lineno}: duplicate identity {row[0].strip()!r}")
            table[ident] = parse_hex(row[1], where=f"{path}:{lineno}")
        return cls(table=table)

    def key_for(self, identity: bytes) -> Secret | None:
        """The key for ``identity``, or ``None`` when this store does not know it."""
        if self._shared is not None:
            return self._shared
        if self._table is not None:
            return self._table.get(identity)
        # No cache: HMAC costs about a microsecond, and a cache keyed by identities
        # that hostile clients choose would grow without bound on the server.
        assert self._master is not None
        return derive_key(self._master, identity, self._length)

    def __repr__(self) -> str:
        kind = "shared" if self._shared else "table" if self._table is not None else "derived"
        return f"KeyStore({kind})"
