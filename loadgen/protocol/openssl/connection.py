"""What both OpenSSL engines (DTLS and TLS) do with a pyOpenSSL connection: name a failure by
OpenSSL's reason (e.g. ``sslv3 alert bad record mac``; :func:`loadgen.protocol.errors.error_from_openssl`
turns it into a code) and read the application data it has decrypted.
"""

from __future__ import annotations

from collections.abc import Callable

from OpenSSL import SSL

from loadgen.protocol.errors import LoadgenError, error_from_openssl
from loadgen.protocol.events import DataReceived

#: OpenSSL reasons that only say which layer gave up; the one before them says why.
_GENERIC_REASONS = frozenset({"record layer failure", "cipher operation failed"})


def openssl_reason(exc: SSL.Error) -> str:
    """The OpenSSL reason (e.g. ``sslv3 alert bad record mac``) a pyOpenSSL error stands for."""
    if isinstance(exc, SSL.SysCallError):
        # pyOpenSSL's (errno, name) pair, e.g. (-1, 'Unexpected EOF'): OpenSSL failed without
        # a reason in its error queue (an over-long handshake message length, say). Over
        # memory BIOs no system call of ours failed: its errno is whatever was left over.
        return "unexpected eof"
    errors = exc.args[0] if exc.args else []
    if errors and isinstance(errors, list) and isinstance(errors[0], tuple):
        reasons = [str(e[2]) for e in errors if len(e) > 2 and e[2]]
        specific = [r for r in reasons if r not in _GENERIC_REASONS]
        return (specific or reasons or ["unknown TLS error"])[-1]
    return str(exc) or "unknown TLS error"


def read_application_data(conn: SSL.Connection, received: Callable[[DataReceived], None],
                          fail: Callable[[LoadgenError], None],
                          closed: Callable[[], None], *, single_record: bool = False,
                          more: Callable[[], bool] | None = None) -> None:
    """Hand what ``conn`` decrypted to ``received`` (as events); ``closed()`` on the peer's close_notify,
    ``fail(error)`` on a failure. ``single_record``: the datagram held one record, so stop
    after the first read instead of making the one that would fail. ``more()``: whether
    another read could return anything (input left), asked after each read, for the same reason."""
    while True:
        try:
            data = conn.recv(65536)
        except SSL.WantReadError:
            return
        except SSL.ZeroReturnError:
            closed()
            return
        except SSL.Error as exc:
            reason = openssl_reason(exc)
            fail(error_from_openssl(reason, remote="alert" in reason))
            return
        if data:
            received(DataReceived(data))
            if single_record or (more is not None and not more()):
                return
