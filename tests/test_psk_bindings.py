"""Guard for the private cffi bindings loadgen.protocol.openssl.bindings uses: an upgrade must fail loudly here."""

from __future__ import annotations

import gc
from importlib import metadata

import pytest
from dtls_wire import Wire
from OpenSSL._util import lib

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.openssl import bindings as psk
from loadgen.protocol.openssl import dtls

pytestmark = pytest.mark.timeout(30)


def vanished_message(missing: list[str]) -> str:
    versions = ", ".join(f"{dist} {_version(dist)}" for dist in ("cryptography", "pyOpenSSL"))
    return (
        f"OpenSSL PSK symbol(s) {', '.join(missing)} vanished from the cffi binding "
        f"(OpenSSL._util.lib): an upgrade of cryptography/pyOpenSSL ({versions}) removed them. "
        "DTLS-PSK cannot work without them: pin the previous versions or port loadgen/psk.py."
    )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def test_required_psk_symbols_are_present():
    missing = psk.missing_symbols()
    assert missing == [], vanished_message(missing)


@pytest.mark.parametrize("name", psk.REQUIRED_SYMBOLS)
def test_each_required_symbol_is_a_callable_binding(name):
    assert hasattr(lib, name), vanished_message([name])
    assert callable(getattr(lib, name)), vanished_message([name])


def test_missing_symbols_reports_a_vanished_name(monkeypatch):
    # The guard itself must be able to fail: a name the binding lacks is reported.
    monkeypatch.setattr(psk, "REQUIRED_SYMBOLS", (*psk.REQUIRED_SYMBOLS, "SSL_CTX_set_psk_gone_callback"))
    assert psk.missing_symbols() == ["SSL_CTX_set_psk_gone_callback"]


def test_failure_message_names_the_symbol_and_the_upgrade():
    message = vanished_message(["SSL_CTX_use_psk_identity_hint"])
    assert "SSL_CTX_use_psk_identity_hint" in message
    assert "vanished" in message
    assert "upgrade of cryptography/pyOpenSSL" in message
    assert metadata.version("pyOpenSSL") in message


def test_callbacks_outlive_garbage_collection():
    """The cffi callbacks are kept on the context: a gc must not free them (segfault)."""
    key = Secret(b"\x01" * 16)

    def contexts():
        # OpenSSL's handshakes on both sides: they are what calls the PSK callbacks.
        return (dtls_contexts.client_context(native=False),
                dtls_contexts.server_context(KeyStore(shared=key), hint=b"h", native=False))

    client_ctx, server_ctx = contexts()
    gc.collect()
    assert len(client_ctx.ssl._loadgen_psk_callbacks) == 1
    assert len(server_ctx.ssl._loadgen_psk_callbacks) == 1
    wire = Wire(server_ctx, dtls.DtlsEngine.client(client_ctx, lambda hint: (b"dev", key)))
    wire.handshake()
    _, s = wire.completed()
    assert s.psk_identity == b"dev"


def test_unusable_identity_hint_is_refused():
    # OpenSSL limits identity hints to 256 bytes; a longer one must not be truncated silently.
    with pytest.raises(ValueError):
        dtls_contexts.server_context(KeyStore(shared=Secret(b"\x01" * 16)), hint=b"h" * 300)
