"""Keys and certificates with ``cryptography``: make them, read them, tell whether one is still what is wanted.

Pure functions: no pyinfra, no files (``spectra.pki.store`` reads and writes the PKI directory). Every check
takes ``now`` as an argument, so the same inputs always give the same answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyAlgorithm = Literal["rsa-2048", "ecdsa-p256"]
KEY_ALGORITHMS: tuple[str, ...] = ("rsa-2048", "ecdsa-p256")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Issued certificates start a little in the past: a node whose clock lags the pyinfra machine's by a few
# minutes must not see them as "not valid yet".
BACKDATE = dt.timedelta(minutes=5)


class PKIError(Exception):
    """The PKI cannot be used as it is (a CA without its key, an expired CA, ...): what to do is in the text."""


def new_key(algorithm: str) -> PrivateKey:
    """A new private key: ``rsa-2048`` or ``ecdsa-p256``."""
    if algorithm == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise PKIError(f"unknown key algorithm {algorithm!r} (one of {', '.join(KEY_ALGORITHMS)})")


def algorithm_of(key: object) -> str:
    """``rsa-<bits>`` or ``ecdsa-<curve>`` of a private or public key (``rsa-2048``, ``ecdsa-p256``)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name, f"ecdsa-{key.curve.name}")
    return type(key).__name__


def key_pem(key: PrivateKey) -> bytes:
    """PEM of a private key, unencrypted, in the traditional form kubeadm writes (RSA/EC PRIVATE KEY)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key(pem: bytes, validated: bool = False) -> PrivateKey:
    """A private key from PEM. ``validated``: this exact key already passed the full RSA consistency check
    (tens of milliseconds per key), so it is skipped; anything else is checked."""
    key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=validated)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PKIError(f"unsupported private key type {type(key).__name__}")
    return key


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _public_der(cert.public_key()) == _public_der(key.public_key())


def fingerprint(cert: x509.Certificate) -> str:
    """sha256 of the DER certificate, lower-case hex (``openssl x509 -fingerprint -sha256`` without colons)."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class LeafSpec:
    """What one leaf certificate must say. ``id`` is its place in the PKI directory (``etcd/node1/server``)."""

    id: str
    ca: str  # "ca", "etcd/ca" or "front-proxy-ca"
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False  # extendedKeyUsage serverAuth
    client: bool = False  # extendedKeyUsage clientAuth

    def subject(self) -> x509.Name:
        return subject_name(self.common_name, self.organizations)

    def usages(self) -> list[x509.ObjectIdentifier]:
        return [oid for wanted, oid in ((self.server, SERVER_AUTH), (self.client, CLIENT_AUTH)) if wanted]


SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


def subject_name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    """``O=...`` (each organisation, in order) then ``CN=...``, the order kubeadm and openssl print."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def split_sans(values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) from a mixed list; both sorted and without duplicates, IPs normalised."""
    dns: set[str] = set()
    ips: set[str] = set()
    for value in values:
        text = str(value).strip()
        if not text:
            continue
        try:
            ips.add(str(ipaddress.ip_address(text)))
        except ValueError:
            dns.add(text.lower())
    return tuple(sorted(dns)), tuple(sorted(ips, key=_ip_sort_key))


def _ip_sort_key(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return (address.version, int(address))


def make_ca(common_name: str, key: PrivateKey, now: dt.datetime, days: int) -> x509.Certificate:
    """A self-signed CA: basicConstraints CA:TRUE with no intermediates below it, keyCertSign and cRLSign."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = subject_name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True, key=key), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _key_usage(ca: bool, key: PrivateKey) -> x509.KeyUsage:
    # keyEncipherment only means something for RSA keys (RSA key exchange); an EC key never enciphers.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    spec: LeafSpec, key: PrivateKey, ca_cert: x509.Certificate, ca_key: PrivateKey, now: dt.datetime, days: int
) -> x509.Certificate:
    """A leaf certificate for ``spec`` signed by the CA, valid ``days`` (never beyond the CA's own end)."""
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject())
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False, key=key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(spec.usages()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def cert_sans(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) of a certificate, in the order :func:`split_sans` gives."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = [str(value) for value in names.get_values_for_type(x509.DNSName)]
    ips = [str(value) for value in names.get_values_for_type(x509.IPAddress)]
    return split_sans([*dns, *ips])


def cert_usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when ``ca_cert`` signed ``cert`` (issuer name and signature both checked)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def reissue_reason(
    cert: x509.Certificate,
    key: PrivateKey,
    spec: LeafSpec,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    renew_before: dt.timedelta,
    algorithm: str,
) -> str | None:
    """Why this leaf must be issued again (None: it is still what ``spec`` asks for, long enough).

    Checked in this order: key pair, CA, validity window, subject, SANs, usages, key algorithm.
    """
    if not key_matches(cert, key):
        return "its key does not match the certificate"
    if not issued_by(cert, ca_cert):
        return f"not issued by the current {spec.ca} (the CA changed)"
    not_after = cert.not_valid_after_utc
    # a leaf that already lasts as long as its CA cannot be renewed for longer: keep it (the CA warns)
    if not_after - now <= renew_before and not_after < ca_cert.not_valid_after_utc:
        return f"expires {not_after:%Y-%m-%d %H:%M} UTC, within the renewal window of {renew_before.days} days"
    if cert.not_valid_before_utc > now:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if cert.subject != spec.subject():
        return f"subject is {cert.subject.rfc4514_string()}, wanted {spec.subject().rfc4514_string()}"
    have_dns, have_ips = cert_sans(cert)
    if (have_dns, have_ips) != (spec.dns_names, spec.ip_addresses):
        have, want = set(have_dns + have_ips), set(spec.dns_names + spec.ip_addresses)
        return f"SANs differ (to add: {sorted(want - have)}, to remove: {sorted(have - want)})"
    if cert_usages(cert) != set(spec.usages()):
        return "extended key usages differ"
    if algorithm_of(key) != algorithm:
        return f"key is {algorithm_of(key)}, wanted {algorithm}"
    return None


def sans_digest(dns_names: Iterable[str], ip_addresses: Iterable[str]) -> str:
    """A short, order-independent digest of a SAN set (to compare without listing every name)."""
    text = "\n".join(sorted({f"DNS:{name}" for name in dns_names} | {f"IP:{ip}" for ip in ip_addresses}))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
