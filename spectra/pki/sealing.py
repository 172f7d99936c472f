"""The sealed-secrets sealing key pair, kept in the PKI directory beside the CA keys (backed up with them).

Layout under the PKI directory::

    sealed-secrets/                 0700
      sealing.key sealing.crt       the active pair: RSA 4096, self-signed (what the controller and kubeseal take)
      retired/<name>.key .crt       earlier pairs, still pushed so that SealedSecrets sealed with them decrypt

The controller decrypts with every key it holds and seals (``kubeseal --fetch-cert``) with the newest one by
its certificate's start, so a retired pair must start before the active one. The active pair is made once,
under the PKI directory's lock, and never replaced: every SealedSecret in the repositories is encrypted for
it. Half a pair, a key that is not RSA or does not match its certificate stops with what to do.

Rotation: move ``sealing.key`` and ``sealing.crt`` into ``retired/`` (same stem, any name), deploy (a new
active pair is made, both are pushed), re-seal the repository's files with the new certificate, deploy; once
no file is sealed for the old pair, delete it from ``retired/`` and deploy again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from spectra.pki.store import CERT_MODE, KEY_MODE, locked, write_atomic
from spectra.pki.x509 import BACKDATE, PKIError, cert_pem, key_matches, key_pem, load_cert, load_key, subject_name

DIRECTORY = "sealed-secrets"  # under the PKI directory
ACTIVE = "sealing"  # file stem of the active pair
RETIRED = "retired"
KEY_BITS = 4096  # the controller's own default (--key-size)
DAYS = 3650  # upstream's default certificate lifetime (--key-ttl, 10 years); kubeseal refuses an expired one
SUBJECT = "sealed-secrets"

SealingKeyFactory = Callable[[], rsa.RSAPrivateKey]


def new_sealing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


@dataclass(frozen=True)
class SealingKey:
    name: str  # "sealing", or the stem of a retired pair
    cert_pem: bytes
    key_pem: bytes
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def cert_sha256(self) -> str:
        return hashlib.sha256(self.cert_pem).hexdigest()


@dataclass(frozen=True)
class SealingKeys:
    directory: Path  # <pki dir>/sealed-secrets
    active: SealingKey
    retired: tuple[SealingKey, ...]  # by name
    created: bool  # the active pair was made by this call

    @property
    def cert_file(self) -> Path:
        """The certificate to seal with (``kubeseal --cert``)."""
        return self.directory / f"{ACTIVE}.crt"


def sealing_cert(key: rsa.RSAPrivateKey, cluster_name: str, now: dt.datetime) -> x509.Certificate:
    """A self-signed certificate for the sealing key: kubeseal reads only its RSA public key and expiry."""
    name = subject_name(SUBJECT, [cluster_name])
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=True, data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _load(key_path: Path, crt_path: Path, name: str) -> SealingKey:
    key_data, crt_data = key_path.read_bytes(), crt_path.read_bytes()
    try:
        private, cert = load_key(key_data), load_cert(crt_data)
    except ValueError as error:
        raise PKIError(f"{key_path} or {crt_path} cannot be read: {error}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise PKIError(f"{key_path} is not an RSA key: the sealed-secrets controller takes RSA keys only")
    if not key_matches(cert, private):
        raise PKIError(f"{key_path} is not the key of {crt_path}: restore the pair from your backup")
    if key_path.stat().st_mode & 0o777 != KEY_MODE:
        key_path.chmod(KEY_MODE)
    return SealingKey(name, crt_data, key_data, cert.not_valid_before_utc, cert.not_valid_after_utc)


def _pair(directory: Path, stem: str) -> tuple[Path, Path]:
    return directory / f"{stem}.key", directory / f"{stem}.crt"


def _retired(directory: Path) -> tuple[SealingKey, ...]:
    folder = directory / RETIRED
    if not folder.is_dir():
        return ()
    stems = sorted({path.stem for path in folder.iterdir() if path.suffix in (".key", ".crt")})
    found = []
    for stem in stems:
        key_path, crt_path = _pair(folder, stem)
        if not (key_path.exists() and crt_path.exists()):
            missing = crt_path if key_path.exists() else key_path
            raise PKIError(f"{missing} is missing but its pair is there: a retired sealing key needs both files")
        found.append(_load(key_path, crt_path, stem))
    return tuple(found)


def ensure(
    pki_dir: Path,
    cluster_name: str,
    now: dt.datetime | None = None,
    keys: SealingKeyFactory = new_sealing_key,
) -> SealingKeys:
    """The sealing keys of the PKI directory ``pki_dir``, the active pair made there when there is none."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    directory = pki_dir.expanduser() / DIRECTORY
    key_path, crt_path = _pair(directory, ACTIVE)
    with locked(pki_dir.expanduser()):
        created = False
        if not key_path.exists() and not crt_path.exists():
            private = keys()
            write_atomic(key_path, key_pem(private), KEY_MODE)
            write_atomic(crt_path, cert_pem(sealing_cert(private, cluster_name, moment)), CERT_MODE)
            created = True
        elif not (key_path.exists() and crt_path.exists()):
            missing = crt_path if key_path.exists() else key_path
            raise PKIError(
                f"{missing} is missing but its pair is there: restore it from your backup of {pki_dir}. The "
                "sealing key is never regenerated over an existing one (the repositories' SealedSecrets are "
                "encrypted for it)."
            )
        active = _load(key_path, crt_path, ACTIVE)
        retired = _retired(directory)
    for old in retired:
        if old.not_before >= active.not_before:
            raise PKIError(
                f"{directory / RETIRED / old.name}.crt starts after the active {crt_path.name}: the controller "
                "would seal with it; retire only older pairs"
            )
    return SealingKeys(directory, active, retired, created)
