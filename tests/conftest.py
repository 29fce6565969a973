"""Shared fixtures: server processes that are always cleaned up (see ``servers.py``)."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import servers` from test modules

from procs import Procs  # noqa: E402
from servers import (  # noqa: E402
    LoadgenServer,
    OpensslServer,
    start_loadgen_server,
    start_openssl_server,
)


@pytest.fixture
def psk_hex() -> str:
    """A fresh random 16-byte key, as hex."""
    return secrets.token_hex(16)


@pytest.fixture
def start_dtls_server(tmp_path: Path) -> Iterator[Callable[..., LoadgenServer]]:
    """Factory: ``start_dtls_server(*cli_args, key_hex=... | psk_csv=[(id, hex), ...])``.

    Every server started is stopped (SIGTERM, bounded wait, SIGKILL) on teardown, even
    when the test failed; a test may call ``server.stop_and_summarize()`` itself.
    """
    started: list[LoadgenServer] = []

    def start(*args: str, **kwargs) -> LoadgenServer:
        workdir = tmp_path / f"server{len(started)}"
        server = start_loadgen_server(*args, workdir=workdir, **kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def dtls_server(start_dtls_server: Callable[..., LoadgenServer], psk_hex: str) -> LoadgenServer:
    """``loadgen serve dtls --port 0`` with one shared random key (``.key_hex``)."""
    return start_dtls_server(key_hex=psk_hex)


@pytest.fixture
def start_s_server(tmp_path: Path) -> Iterator[Callable[..., OpensslServer]]:
    """Factory: ``start_s_server(key_hex, identity, *extra_args)`` -> a running s_server."""
    started: list[OpensslServer] = []

    def start(key_hex: str, identity: str, *extra: str) -> OpensslServer:
        server = start_openssl_server(key_hex, identity, *extra, workdir=tmp_path / f"s_server{len(started)}")
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Starts ``python -m loadgen ...`` children in ``tmp_path``; every one is ended after the test."""
    children = Procs(tmp_path)
    try:
        yield children
    finally:
        children.cleanup()
