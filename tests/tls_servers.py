"""Certificates and TLS peer processes for the TLS tests (loopback only, bounded waits).

* :func:`make_pki` writes a fresh test PKI (``trustme`` CA, server and client
  certificates, and the bad ones: expired, not yet valid, self-signed, other CA).
* :func:`start_loadgen_tls_server` runs ``python -m loadgen serve tls --port 0 ...``.
* :func:`start_openssl_tls_server` runs ``openssl s_server`` (TLS) on a free TCP port.
* :func:`run_openssl_tls_client` runs ``openssl s_client`` (TLS) once.

Process handling reuses :mod:`servers` (output to files, SIGTERM then SIGKILL).
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from servers import (
    OPENSSL,
    START_TIMEOUT,
    LoadgenServer,
    ServerSummary,
    _read,
    _terminate,
    _wait_for,
    start_loadgen_server,
)

SERVER_NAMES = ("localhost", "server.test", "127.0.0.1")



# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Paths of a test PKI. ``*_pem`` files hold the key and the certificate chain together."""

    root: Path
    ca: trustme.CA
    ca_file: Path
    ca_dir: Path  # the CA under its OpenSSL subject-hash name (<hash>.0)
    server_pem: Path  # names: SERVER_NAMES
    server_cert: Path  # the same certificate and key in separate files
    server_key: Path
    client_pem: Path  # CN client.test
    other_ca_file: Path
    other_server_pem: Path  # issued for the same names by another CA
    expired_pem: Path
    not_yet_valid_pem: Path
    self_signed_pem: Path


def make_pki(root: Path) -> Pki:
    """Write a fresh PKI under ``root`` (a few tens of milliseconds: ECDSA keys)."""
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="loadgen test CA")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    ca_dir = root / "ca.d"
    ca_dir.mkdir(exist_ok=True)
    ca_cert = crypto.X509.from_cryptography(x509.load_pem_x509_certificate(ca.cert_pem.bytes()))
    (ca_dir / f"{ca_cert.subject_name_hash():08x}.0").write_bytes(ca.cert_pem.bytes())

    server = ca.issue_cert(*SERVER_NAMES, common_name="server.test")
    server.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    server.cert_chain_pems[0].write_to_path(str(root / "server.crt"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    ca.issue_cert("client.test", common_name="client.test").private_key_and_cert_chain_pem.write_to_path(
        str(root / "client.pem"))

    other = trustme.CA(organization_name="some other CA")
    other.cert_pem.write_to_path(str(root / "other-ca.pem"))
    other.issue_cert(*SERVER_NAMES).private_key_and_cert_chain_pem.write_to_path(str(root / "other-server.pem"))

    now = dt.datetime.now(dt.UTC)
    ca.issue_cert(*SERVER_NAMES, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)) \
        .private_key_and_cert_chain_pem.write_to_path(str(root / "expired.pem"))
    ca.issue_cert(*SERVER_NAMES, not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=30)) \
        .private_key_and_cert_chain_pem.write_to_path(str(root / "not-yet-valid.pem"))
    (root / "self-signed.pem").write_bytes(_self_signed("server.test"))
    return Pki(
        root=root, ca=ca, ca_file=root / "ca.pem", ca_dir=ca_dir, server_pem=root / "server.pem",
        server_cert=root / "server.crt", server_key=root / "server.key", client_pem=root / "client.pem",
        other_ca_file=root / "other-ca.pem", other_server_pem=root / "other-server.pem",
        expired_pem=root / "expired.pem", not_yet_valid_pem=root / "not-yet-valid.pem",
        self_signed_pem=root / "self-signed.pem",
    )


def _self_signed(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in SERVER_NAMES[:2]]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- python -m loadgen serve tls ------------------------------------------------------------


#: ``loadgen serve tls`` runs under the same process handling as ``serve dtls``.
LoadgenTlsServer = LoadgenServer
TlsServerSummary = ServerSummary


def start_loadgen_tls_server(*args: str, workdir: Path | None = None, key_hex: str | None = None,
                             host: str = "127.0.0.1", timeout: float = START_TIMEOUT) -> LoadgenServer:
    """Start ``python -m loadgen serve tls --host HOST --port 0 ARGS`` and wait for its listening line.

    ``key_hex`` (one shared PSK) goes through ``--psk-env`` so that it stays out of ``ps``.
    """
    return start_loadgen_server(*args, key_hex=key_hex, workdir=workdir, host=host, timeout=timeout,
                                protocol="tls")


# -- openssl s_server / s_client (TLS) ---------------------------------------------------------


@dataclass
class OpensslTlsServer:
    """A running ``openssl s_server`` (TLS, one client at a time)."""

    host: str
    port: int
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def output(self) -> str:
        return _read(self.stdout_path)

    @property
    def errors(self) -> str:
        return _read(self.stderr_path)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            _terminate(self.process, signal.SIGTERM)


def start_openssl_tls_server(*args: str, workdir: Path | None = None, attempts: int = 5,
                             timeout: float = START_TIMEOUT) -> OpensslTlsServer:
    """``openssl s_server ARGS -accept 127.0.0.1:PORT`` on a free port (retried if it got taken)."""
    assert OPENSSL is not None, "no openssl binary"
    workdir = Path(workdir or tempfile.mkdtemp(prefix="openssl-tls-server-"))
    workdir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for attempt in range(attempts):
        port = free_tcp_port()
        out_path, err_path = workdir / f"s_server{attempt}.out", workdir / f"s_server{attempt}.err"
        command = [OPENSSL, "s_server", *args, "-accept", f"127.0.0.1:{port}"]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir)
        server = OpensslTlsServer("127.0.0.1", port, process, out_path, err_path)
        try:
            _wait_for(lambda: "ACCEPT" in server.output or process.poll() is not None, timeout)  # noqa: B023
            if "ACCEPT" in server.output and process.poll() is None:
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()
        failures.append(f"port {port}: status {process.returncode}: {server.errors.strip()[-500:]}")
    raise AssertionError("openssl s_server did not start:\n" + "\n".join(failures))


@dataclass
class TlsClientRun:
    output: str
    returncode: int | None
    elapsed: float


def run_openssl_tls_client(address: tuple[str, int], *args: str, send: str | None = None,
                           until: str | None = None, timeout: float = 15.0,
                           workdir: Path | None = None) -> TlsClientRun:
    """``openssl s_client -connect HOST:PORT ARGS``; writes ``send`` + newline, waits for ``until``."""
    assert OPENSSL is not None, "no openssl binary"
    workdir = Path(workdir or tempfile.mkdtemp(prefix="openssl-tls-client-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / "s_client.out"
    host, port = address
    command: Sequence[str] = [OPENSSL, "s_client", "-connect", f"{host}:{port}", *args]
    started = time.monotonic()
    with open(out_path, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=workdir)
    try:
        if send is not None:
            assert process.stdin is not None
            try:
                process.stdin.write(send.encode() + b"\n")
                process.stdin.flush()
            except BrokenPipeError:
                pass
        _wait_for(lambda: (until is not None and until in _read(out_path)) or process.poll() is not None, timeout)
        returncode = process.poll()
    finally:
        _terminate(process, signal.SIGTERM, timeout=5.0)
    return TlsClientRun(_read(out_path), returncode, time.monotonic() - started)
