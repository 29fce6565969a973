"""What QtSSLSocket shows of a certificate: :class:`CertificateInfo`, made from the
``cryptography`` certificate a :class:`~loadgen.protocol.openssl.tls.TlsEngine` hands out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


@dataclass(frozen=True)
class CertificateInfo:
    """What QtSSLSocket shows of a certificate; names in Qt's ``/KEY=value/...`` form."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str  # colon-separated upper-case hex
    serial_number: int
    alt_names: tuple[str, ...] = ()

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> CertificateInfo:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            alt_names = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
                str(v) for v in san.get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            alt_names = ()
        digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper()
        return cls(
            subject=_qt_name(cert.subject), issuer=_qt_name(cert.issuer),
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            sha256_fingerprint=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)),
            serial_number=cert.serial_number, alt_names=alt_names,
        )


def _qt_name(name: x509.Name) -> str:
    return "".join(f"/{attr.rfc4514_attribute_name}={attr.value!s}" for rdn in name.rdns for attr in rdn)
