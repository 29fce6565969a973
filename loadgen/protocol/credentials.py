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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.protocol.errors import ConfigError


@dataclass(frozen=True)
class Secret:
    """Key bytes that print as ``Secret(<N bytes>)``."""

    value: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret(<{len(self.value)} bytes>)"

    __str__ = __repr__


#: A client's key chooser: ``choose(hint) -> (identity, key)`` for one connection, given the
#: server's identity hint (None when it sent none, and always with TLS 1.3). Both engine kinds
#: and both protocols take one; the transports build it from the scenario's ``psk`` section.
PskChooser = Callable[[bytes | None], tuple[bytes, "Secret"]]


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


#: Largest key or master file read. A PSK is at most 512 bytes (OpenSSL's limit); in hex with
#: a separator per byte that is 1.5 KiB, so 8 KiB leaves room for line breaks and still refuses
#: a wrong file (a certificate bundle, a log) before it is read.
KEY_FILE_CAP = 8 << 10
#: Largest identity CSV read. A million rows of ``device-0000001,<32 hex digits>`` are 48 MB
#: (read in 2.5 s into 410 MB of memory); 256 MiB takes a million rows of up to 268 bytes (e.g.
#: 200-character identities with 32-byte keys) and refuses a wrong file (a disk image) unread.
CSV_FILE_CAP = 256 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: ``"a directory"``, ``"a FIFO"``, ..."""
    return next((name for test, name in _KINDS if test(mode)), "of an unknown kind")


def show_size(size: int) -> str:
    """``8192`` -> ``"8 KiB"``, ``(1 << 30) + 1`` -> ``"1.0 GiB"``: for messages."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) or value >= 10 else f"{value:.1f} {unit}"
    return f"{size} bytes"


def check_regular(info: os.stat_result, cap: int, what: str) -> str | None:
    """Why a file with this stat cannot be read as ``what`` under ``cap`` bytes, or None when it can."""
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({file_kind(info.st_mode)})"
    if info.st_size > cap:
        return f"{show_size(info.st_size)}, over the {show_size(cap)} limit for a {what}"
    return None


class FileRefused(ConfigError):
    """A file that cannot be read as asked (missing, not a regular file, over its cap).

    ``str`` names the file; ``reason`` is the same without it, for callers that name the place
    their own way (the scenario loader: file, line and key)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason

    def __reduce__(self) -> tuple[type[FileRefused], tuple[str, str]]:
        return type(self), (self.where, self.reason)


def read_capped(path: str | os.PathLike[str], cap: int, what: str) -> tuple[bytes, int]:
    """The bytes and mode of the regular file at ``path``, at most ``cap`` bytes of it.

    Anything else (a directory, a device such as /dev/zero, a FIFO, a file over the cap)
    raises :class:`FileRefused` naming ``what`` and the path, without reading the file
    and without blocking: the file is opened non-blocking and checked with ``fstat``
    before a byte is read (a FIFO is never read), and at most ``cap + 1`` bytes are read
    (a file that grows while it is read is refused too).
    """
    where = f"{what} {os.fspath(path)}"
    try:
        # O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(where, exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        problem = check_regular(info, cap, what)
        if problem:
            raise FileRefused(where, problem)
        chunks, size = [], 0
        while size <= cap and (chunk := os.read(fd, min(cap + 1 - size, 1 << 20))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileRefused(where, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > cap:
        raise FileRefused(where, f"grew over the {show_size(cap)} limit for a {what} while being read")
    return b"".join(chunks), info.st_mode


def _read_key_file(path: Path, cap: int = KEY_FILE_CAP, what: str = "key file") -> bytes:
    data, mode = read_capped(path, cap, what)
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"{what} {path} is readable by other users (chmod 600 it)", stacklevel=3)
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
        text = _read_key_file(path, CSV_FILE_CAP, "CSV file").decode("utf-8-sig", "replace")
        table: dict[bytes, Secret] = {}
        rows = csv.reader(text.splitlines())
        try:
            for lineno, row in enumerate(rows, start=1):
                if not row or row[0].startswith("#") or (lineno == 1 and row[0].strip() == "identity"):
                    continue
                if len(row) != 2:
                    raise ConfigError(f"{path}:{lineno}: expected 'identity,hex-key'")
                ident = row[0].strip().encode()
                if ident in table:  # a dict: the check costs the same for the millionth row
                    raise ConfigError(f"{path}:{lineno}: duplicate identity {row[0].strip()!r}")
                table[ident] = parse_hex(row[1], where=f"{path}:{lineno}")
        except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit: no identity or key is that long
            raise ConfigError(f"{path}:{rows.line_num}: not an identity,hex-key row ({exc})") from None
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

    def one_key(self) -> tuple[Secret, int | None] | None:
        """The one key this store is made of, to hand it to another process: the shared key and None,
        or a derivation's master and the derived keys' length; None for a table."""
        if self._shared is not None:
            return self._shared, None
        return (self._master, self._length) if self._master is not None else None

    def __repr__(self) -> str:
        kind = "shared" if self._shared else "table" if self._table is not None else "derived"
        return f"KeyStore({kind})"
