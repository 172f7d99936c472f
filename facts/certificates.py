"""PEM certificates on a host, parsed here: expiry, subject, issuer, SANs, fingerprints. One command for all.

The host only runs ``base64`` (coreutils, on every Debian): ``openssl`` is not part of a minimal Debian and
would have to be installed just to be asked. The PEM comes back and ``cryptography`` reads it on the machine
running pyinfra, which then knows everything in the certificate, not only what one openssl call prints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import TypedDict

from cryptography import x509
from pyinfra.api import FactBase, FactProcessError, QuoteString, StringCommand

from spectra.pki.x509 import cert_sans, fingerprint, is_ca, sans_digest

# Output, one line per asked path: "P|<base64 of the file>|path" for a regular file, "M|path" otherwise.
# Certificates are a few kB, so the whole file comes back.
_SCRIPT = (
    'for p in "$@"; do if [ -f "$p" ]; then '
    'printf \'P|%s|%s\\n\' "$(base64 -w0 -- "$p" 2>/dev/null)" "$p"; '
    "else printf 'M|%s\\n' \"$p\"; fi; done"
)


class CertificateState(TypedDict, total=False):
    exists: bool
    sha256: str  # of the file as it is on the host
    fingerprint: str  # sha256 of the DER certificate (the first one in the file)
    subject: str  # RFC 4514, as ``openssl x509 -subject -nameopt RFC2253`` prints it
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    serial: str  # hex
    is_ca: bool
    dns_names: list[str]
    ip_addresses: list[str]
    sans_digest: str  # short digest of the SAN set (spectra.pki.x509.sans_digest)
    error: str  # the file exists but is no PEM certificate


def parse_certificate(data: bytes) -> CertificateState:
    """What a certificate file says (``error`` when it is not a PEM certificate)."""
    state = CertificateState(exists=True, sha256=hashlib.sha256(data).hexdigest())
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as error:
        state["error"] = f"not a PEM certificate: {error}"
        return state
    dns, ips = cert_sans(cert)
    state["fingerprint"] = fingerprint(cert)
    state["subject"] = cert.subject.rfc4514_string()
    state["issuer"] = cert.issuer.rfc4514_string()
    state["not_before"] = cert.not_valid_before_utc.isoformat()
    state["not_after"] = cert.not_valid_after_utc.isoformat()
    state["serial"] = format(cert.serial_number, "x")
    state["is_ca"] = is_ca(cert)
    state["dns_names"] = list(dns)
    state["ip_addresses"] = list(ips)
    state["sans_digest"] = sans_digest(dns, ips)
    return state


class Certificates(FactBase[dict[str, CertificateState]]):
    """
    PEM certificates at ``paths``, keyed by path; ``{"exists": False}`` for a missing one:

    .. code:: python

        {
            "/etc/kubernetes/pki/apiserver.crt": {
                "exists": True, "not_after": "2027-03-01T10:00:00+00:00", "subject": "CN=kube-apiserver",
                "issuer": "CN=kubernetes", "dns_names": ["kubernetes", ...], "ip_addresses": ["10.96.0.1", ...],
                "sans_digest": "3f0c...", "fingerprint": "ab12...", "sha256": "9f86...", "is_ca": False, ...
            },
            "/etc/kubernetes/pki/ca.crt": {"exists": False},
        }

    + paths: certificate files to read
    """

    def command(self, paths: Sequence[str]) -> StringCommand:
        return StringCommand("sh", "-c", QuoteString(_SCRIPT), "sh", *[QuoteString(p) for p in dict.fromkeys(paths)])

    @staticmethod
    def default() -> dict[str, CertificateState]:
        return {}

    def process(self, output: list[str]) -> dict[str, CertificateState]:
        result: dict[str, CertificateState] = {}
        for line in output:
            kind, _, rest = line.partition("|")
            if kind == "M":
                result[rest] = CertificateState(exists=False)
            elif kind == "P":
                encoded, separator, path = rest.partition("|")
                if not separator:
                    raise FactProcessError(f"unexpected certificate line: {line[:80]!r}")
                try:
                    data = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError) as error:
                    raise FactProcessError(f"bad base64 for {path}: {error}") from error
                result[path] = parse_certificate(data)
            elif line.strip():
                raise FactProcessError(f"unexpected certificate line: {line[:80]!r}")
        return result
