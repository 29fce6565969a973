"""In-memory TLS engines wired back to back: certificates, verification codes, PSK, resumption."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from tls_servers import Pki, make_pki

from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import ConfigError, LocalProtocolError
from loadgen.protocol.events import (
    CertCheckFailed,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    HandshakeCompleted,
)
from loadgen.protocol.openssl import bindings
from loadgen.protocol.openssl.tls import SessionCache, TlsEngine
from loadgen.protocol.openssl.tls_certificates import CertificateInfo, _qt_name
from loadgen.protocol.openssl.tls_contexts import TlsContext, TlsOptions, client_context, server_context

pytestmark = pytest.mark.timeout(60)

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(client: TlsEngine, server: TlsEngine, rounds: int = 20) -> tuple[list, list]:
    """Move bytes both ways until neither side has anything to send; return both event lists."""
    client.start()
    c_events: list = []
    s_events: list = []
    for _ in range(rounds):
        to_server, to_client = client.data_to_send(), b""
        server.receive_data(to_server)
        to_client = server.data_to_send()
        client.receive_data(to_client)
        c_events += drain(client)
        s_events += drain(server)
        if not to_server and not to_client:
            break
    return c_events, s_events


def drain(engine: TlsEngine) -> list:
    events = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    return events


def completed(events: list) -> HandshakeCompleted:
    done = [e for e in events if isinstance(e, HandshakeCompleted)]
    assert len(done) == 1, events
    return done[0]


def failure(events: list):
    failed = [e for e in events if isinstance(e, ConnectionFailed)]
    assert len(failed) == 1, events
    return failed[0].error


def cert_server(pki: Pki, pem: Path | None = None, **options) -> TlsContext:
    return server_context(TlsOptions(cert_file=pem or pki.server_pem, **options))


def verifying_client(pki: Pki, **options) -> TlsContext:
    options.setdefault("ca_file", pki.ca_file)
    return client_context(TlsOptions(verify="peer", **options))


@pytest.mark.parametrize(("server_name", "sni"), [("server.test", "server.test"), ("127.0.0.1", None),
                                                ("[::1]", None), ("::1", None), ("server.test", "server.test")])
def test_sni_names_a_host_and_never_an_address(pki: Pki, server_name: str, sni: str | None) -> None:
    """RFC 6066 3: no SNI for an address literal; the answer is cached per name (asked again: the same)."""
    client = TlsEngine.client(client_context(TlsOptions()), server_name=server_name)
    server = TlsEngine.server(cert_server(pki))
    run(client, server)
    assert server.server_name == sni


# -- certificates ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_certificate_handshake_verified_with_ca_file(pki: Pki, version: str) -> None:
    client = TlsEngine.client(verifying_client(pki, min_version=version, max_version=version),
                              server_name="server.test")
    server = TlsEngine.server(cert_server(pki))
    c, s = run(client, server)
    done = completed(c)
    assert done.version == f"TLSv{version}" and done.cipher and not done.resumed
    assert completed(s).version == done.version
    assert server.server_name == "server.test"  # SNI
    client.send(b"hello\n")
    server.receive_data(client.data_to_send())
    assert drain(server) == [DataReceived(b"hello\n")]
    info = CertificateInfo.from_x509(client.peer_certificate)
    assert info.subject.endswith("/CN=server.test") and "/O=loadgen test CA" in info.issuer
    assert "server.test" in info.alt_names and "127.0.0.1" in info.alt_names
    fingerprint = client.peer_certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert info.sha256_fingerprint.replace(":", "") == fingerprint
    assert info.not_before < info.not_after
    assert CertificateInfo.from_x509(server.local_certificate) == info


def test_verified_with_hashed_ca_directory(pki: Pki) -> None:
    client = TlsEngine.client(verifying_client(pki, ca_file=None, ca_dir=pki.ca_dir), server_name="server.test")
    c, _ = run(client, TlsEngine.server(cert_server(pki)))
    completed(c)


def test_ca_file_is_used_first_then_the_directory(pki: Pki) -> None:
    # The file holds an unrelated CA; the server's issuer is found in the directory.
    client = TlsEngine.client(verifying_client(pki, ca_file=pki.other_ca_file, ca_dir=pki.ca_dir),
                              server_name="localhost")
    c, _ = run(client, TlsEngine.server(cert_server(pki)))
    completed(c)


def test_certificate_and_key_in_separate_files(pki: Pki) -> None:
    server_ctx = server_context(TlsOptions(cert_file=pki.server_cert, key_file=pki.server_key))
    c, _ = run(TlsEngine.client(verifying_client(pki), server_name="localhost"), TlsEngine.server(server_ctx))
    completed(c)


def test_ip_address_is_checked_against_the_certificate(pki: Pki) -> None:
    ok = TlsEngine.client(verifying_client(pki), server_name="127.0.0.1")
    completed(run(ok, TlsEngine.server(cert_server(pki)))[0])
    wrong = TlsEngine.client(verifying_client(pki), server_name="127.0.0.2")
    error = failure(run(wrong, TlsEngine.server(cert_server(pki)))[0])
    assert error.code == "cert-hostname-mismatch" and error.verify_code == 64


@pytest.mark.parametrize(
    ("pem", "server_name", "code", "verify_code"),
    [
        ("expired_pem", "server.test", "cert-expired", 10),
        ("not_yet_valid_pem", "server.test", "cert-not-yet-valid", 9),
        ("self_signed_pem", "server.test", "cert-self-signed", 18),
        ("other_server_pem", "server.test", "cert-untrusted", 20),
        ("server_pem", "wrong.test", "cert-hostname-mismatch", 62),
    ],
)
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_verification_failures_have_their_own_codes(pki: Pki, pem: str, server_name: str, code: str,
                                                    verify_code: int, version: str) -> None:
    client = TlsEngine.client(verifying_client(pki, max_version=version), server_name=server_name)
    server = TlsEngine.server(cert_server(pki, getattr(pki, pem)))
    c, s = run(client, server)
    checks = [e for e in c if isinstance(e, CertCheckFailed)]
    assert [e.code for e in checks] == [verify_code], c
    assert checks[0].description == bindings.verify_error_string(verify_code)
    error = failure(c)
    assert error.code == code and error.verify_code == verify_code and error.depth == 0
    assert checks[0].description in str(error)
    assert not any(isinstance(e, HandshakeCompleted) for e in c)
    # The server learns it from our alert.
    assert failure(s).code.startswith("tls-") or failure(s).code.startswith("cert-")


def test_verify_none_accepts_any_certificate(pki: Pki) -> None:
    client = TlsEngine.client(client_context(TlsOptions(verify="none")), server_name="wrong.test")
    c, _ = run(client, TlsEngine.server(cert_server(pki, pki.self_signed_pem)))
    completed(c)


def test_cipher_restriction_and_version_bounds(pki: Pki) -> None:
    client = TlsEngine.client(
        verifying_client(pki, max_version="1.2", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"), server_name="localhost")
    done = completed(run(client, TlsEngine.server(cert_server(pki)))[0])
    assert (done.version, done.cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")

    client = TlsEngine.client(verifying_client(pki, max_version="1.3", ciphersuites="TLS_AES_128_GCM_SHA256"),
                              server_name="localhost")
    assert completed(run(client, TlsEngine.server(cert_server(pki)))[0]).cipher == "TLS_AES_128_GCM_SHA256"

    client = TlsEngine.client(verifying_client(pki, max_version="1.2"), server_name="localhost")
    c, s = run(client, TlsEngine.server(cert_server(pki, min_version="1.3")))
    assert failure(c).code.startswith("tls-") and failure(s).code == "tls-unsupported-protocol"


def test_bad_configuration_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_version"):
        client_context(TlsOptions(min_version="1.3", max_version="1.2"))
    with pytest.raises(ConfigError, match="cipher"):
        client_context(TlsOptions(ciphers="NO-SUCH-CIPHER"))
    with pytest.raises(ConfigError, match="certificate"):
        server_context(TlsOptions(cert_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="private key"):  # key does not match the certificate
        server_context(TlsOptions(cert_file=pki.server_cert, key_file=pki.client_pem))
    with pytest.raises(ConfigError, match="needs a certificate"):
        server_context(TlsOptions())
    with pytest.raises(LocalProtocolError):
        TlsEngine.client(client_context(TlsOptions(), psk_mode=True))  # no chooser


# -- mutual TLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_mutual_tls(pki: Pki, version: str) -> None:
    server_ctx = cert_server(pki, verify="require", ca_file=pki.ca_file)
    client = TlsEngine.client(verifying_client(pki, max_version=version, cert_file=pki.client_pem),
                              server_name="localhost")
    server = TlsEngine.server(server_ctx)
    c, s = run(client, server)
    completed(c), completed(s)
    assert CertificateInfo.from_x509(server.peer_certificate).subject.endswith("/CN=client.test")
    assert CertificateInfo.from_x509(client.local_certificate).subject.endswith("/CN=client.test")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_without_certificate_is_refused_when_required(pki: Pki, version: str) -> None:
    server = TlsEngine.server(cert_server(pki, verify="require", ca_file=pki.ca_file))
    client = TlsEngine.client(verifying_client(pki, max_version=version), server_name="localhost")
    c, s = run(client, server)
    assert failure(s).code == "cert-required"
    # TLS 1.3 clients finish their side first, then read the server's certificate_required alert.
    assert failure(c).code == ("cert-required" if version == "1.3" else "tls-handshake-failure")
    assert not any(isinstance(e, HandshakeCompleted) for e in s)


def test_untrusted_client_certificate_is_refused(pki: Pki) -> None:
    server = TlsEngine.server(cert_server(pki, verify="require", ca_file=pki.ca_file))
    client = TlsEngine.client(verifying_client(pki, cert_file=pki.other_server_pem), server_name="localhost")
    _, s = run(client, server)
    assert failure(s).code == "cert-untrusted"


def test_optional_client_certificate(pki: Pki) -> None:
    server = TlsEngine.server(cert_server(pki, verify="peer", ca_file=pki.ca_file))
    c, s = run(TlsEngine.client(verifying_client(pki), server_name="localhost"), server)
    completed(c), completed(s)
    assert server.peer_certificate is None


# -- PSK -------------------------------------------------------------------------------------


def psk_pair(version: str, identity: bytes = b"dev1", key: Secret = KEY,
             keys: KeyStore | None = None) -> tuple[TlsEngine, TlsEngine]:
    client_ctx = client_context(TlsOptions(min_version=version, max_version=version), psk_mode=True)
    server_ctx = server_context(TlsOptions(), keys=keys or KeyStore(table={b"dev1": KEY}), hint=b"loadgen")
    hints: list = []

    def choose(hint: bytes | None) -> tuple[bytes, Secret]:
        hints.append(hint)
        return identity, key

    client = TlsEngine.client(client_ctx, choose=choose)
    client.hints = hints  # type: ignore[attr-defined]
    return client, TlsEngine.server(server_ctx)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_psk_handshake(version: str) -> None:
    client, server = psk_pair(version)
    c, s = run(client, server)
    done = completed(c)
    assert done.version == f"TLSv{version}"
    if version == "1.2":
        assert done.cipher.startswith("PSK-") and client.hints == [b"loadgen"]  # type: ignore[attr-defined]
    else:  # external PSK through the TLS 1.2-style callbacks: SHA-256 suites, no hint
        assert done.cipher.endswith("_SHA256") and client.hints == [None]  # type: ignore[attr-defined]
    assert completed(s).psk_identity == b"dev1" and server.psk_identity == b"dev1"
    assert client.peer_certificate is None
    client.send(b"ping\n")
    server.receive_data(client.data_to_send())
    assert drain(server) == [DataReceived(b"ping\n")]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_wrong_psk_key_and_unknown_identity_have_distinct_codes(version: str) -> None:
    client, server = psk_pair(version, key=Secret(b"\xff" * 16))
    c, s = run(client, server)
    assert failure(c).code == "psk-key-mismatch" and failure(s).code == "psk-key-mismatch"

    client, server = psk_pair(version, identity=b"nobody")
    c, s = run(client, server)
    assert failure(c).code == "psk-unknown-identity" and failure(s).code == "psk-unknown-identity"


def test_psk_secret_never_shows_in_errors() -> None:
    client, server = psk_pair("1.2", key=Secret(bytes.fromhex("0badc0de0badc0de0badc0de0badc0de")))
    c, s = run(client, server)
    for error in (failure(c), failure(s)):
        assert "0badc0de" not in str(error).lower() and "0badc0de" not in repr(error).lower()


# -- resumption --------------------------------------------------------------------------------


def connect_twice(pki: Pki, version: str, *, client_resumption: bool = True,
                  server_resumption: bool = True) -> list[bool]:
    client_ctx = verifying_client(pki, max_version=version, resumption=client_resumption)
    server_ctx = cert_server(pki, resumption=server_resumption)
    cache = SessionCache()
    resumed = []
    for _ in range(3):
        client = TlsEngine.client(client_ctx, server_name="localhost", session=cache.get("server"))
        server = TlsEngine.server(server_ctx)
        c, _ = run(client, server)  # also carries TLS 1.3 tickets after the handshake
        resumed.append(completed(c).resumed)
        assert client.resumed == server.resumed
        client.close()  # close_notify: OpenSSL keeps only cleanly closed sessions resumable
        server.receive_data(client.data_to_send())
        cache.put("server", client.session)
    return resumed


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_resumption_on(pki: Pki, version: str) -> None:
    assert connect_twice(pki, version) == [False, True, True]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_resumption_off(pki: Pki, version: str) -> None:
    assert connect_twice(pki, version, client_resumption=False) == [False, False, False]
    assert connect_twice(pki, version, server_resumption=False) == [False, False, False]


def test_session_cache_is_bounded() -> None:
    cache = SessionCache(maxsize=2)
    client = client_context()
    sessions = [object() for _ in range(3)]
    for i, session in enumerate(sessions):
        cache.put(i, session)  # type: ignore[arg-type]
    assert len(cache) == 2 and cache.get(0) is None and cache.get(2) is sessions[2]
    cache.put(2, None)
    assert cache.get(2) is None
    assert client.is_server is False


# -- closing ------------------------------------------------------------------------------------


def test_close_notify_and_eof(pki: Pki) -> None:
    client = TlsEngine.client(verifying_client(pki), server_name="localhost")
    server = TlsEngine.server(cert_server(pki))
    run(client, server)
    server.close()
    client.receive_data(server.data_to_send())
    assert drain(client) == [ConnectionClosed()] and client.closed and client.peer_closed
    assert client.data_to_send()  # our close_notify in answer

    client = TlsEngine.client(verifying_client(pki), server_name="localhost")
    server = TlsEngine.server(cert_server(pki))
    run(client, server)
    client.receive_eof()  # TCP FIN without close_notify
    assert drain(client) == [ConnectionClosed()]

    client = TlsEngine.client(verifying_client(pki), server_name="localhost")
    client.start()
    client.receive_eof()
    assert failure(drain(client)).code == "peer-closed"


def test_large_writes_are_split_into_records(pki: Pki) -> None:
    client = TlsEngine.client(verifying_client(pki), server_name="localhost")
    server = TlsEngine.server(cert_server(pki))
    run(client, server)
    payload = bytes(range(256)) * 1000
    client.send(payload)
    server.receive_data(client.data_to_send())
    assert b"".join(e.data for e in drain(server)) == payload


def test_tls_bindings_present() -> None:
    assert bindings.missing_tls_symbols() == []


def test_certificate_info_names() -> None:
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"), x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    assert _qt_name(name) == "/C=NO/CN=x"


def test_a_handshake_step_waits_without_an_exception_and_fails_as_pyopenssl_does() -> None:
    """bindings.do_handshake: False while it waits for the peer (pyOpenSSL raises WantReadError
    there, twice a handshake), pyOpenSSL's own exception for anything else."""
    from OpenSSL import SSL

    from loadgen.protocol.openssl import bindings

    conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    conn.set_connect_state()
    assert bindings.do_handshake(conn) is False  # the ClientHello is out; nothing came back yet
    assert conn.bio_read(65536)[:1] == b"\x16"  # a handshake record
    conn.bio_write(b"\x16\x03\x03\x00\x04garbage")  # not a ServerHello
    with pytest.raises(SSL.Error):
        bindings.do_handshake(conn)
