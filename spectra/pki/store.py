"""The PKI directory on the machine that runs pyinfra: the one place CA keys live.

Layout (kubeadm's names; ``<name>`` is an inventory host name)::

    <pki dir>/                      0700
      ca.crt ca.key                 cluster CA (10 years by default)
      front-proxy-ca.crt .key       front-proxy (aggregation layer) CA
      etcd/ca.crt etcd/ca.key       etcd CA
      sa.key sa.pub                 service-account token signing key pair
      apiserver.crt .key, apiserver-kubelet-client, apiserver-etcd-client, front-proxy-client,
      admin, super-admin, controller-manager, scheduler, kube-proxy, etcd/healthcheck-client
      etcd/<name>/server, etcd/<name>/peer
      nodes/<name>/kubelet (serving), nodes/<name>/kubelet-client
      sealed-secrets/sealing.key .crt  the sealed-secrets sealing pair (spectra.pki.sealing; not made here)
      .lock                         held while the directory is read or changed

Directories 0700, keys 0600, certificates 0644; every write goes to a temporary file renamed into place.

:func:`ensure` loads what is there, creates what is missing and reissues a leaf only when it must
(``spectra.pki.x509.reissue_reason``). A CA is never replaced: one that is unusable (expired, without its key,
not a CA) stops the run with what to do. The service-account key never expires and is never replaced either
(replacing it invalidates every token in the cluster).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from spectra.pki.cluster import CAS, ClusterSpec, leaf_specs
from spectra.pki.x509 import (
    LeafSpec,
    PKIError,
    PrivateKey,
    algorithm_of,
    cert_pem,
    fingerprint,
    is_ca,
    issue,
    key_matches,
    key_pem,
    load_cert,
    load_key,
    make_ca,
    new_key,
    public_pem,
    reissue_reason,
)

DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644
LOCK_TIMEOUT = 120.0

# Service-account tokens are signed RS256 with an RSA 2048 key, whatever the other keys are: every consumer of
# projected tokens (cloud workload-identity federation, Vault, other OIDC verifiers) accepts RS256, ES256 not
# everywhere. It is one key, made once, so RSA's slower generation does not matter.
SA_KEY_ALGORITHM = "rsa-2048"

KeyFactory = Callable[[str], PrivateKey]


def default_pki_dir(cluster_name: str, home: Path | None = None) -> Path:
    """``$XDG_DATA_HOME/spectra/pki/<cluster>`` (``~/.local/share/spectra/pki/<cluster>`` by default)."""
    data_home = os.environ.get("XDG_DATA_HOME") if home is None else None
    base = Path(data_home) if data_home else (home or Path.home()) / ".local" / "share"
    return base / "spectra" / "pki" / cluster_name


@dataclass
class Authority:
    id: str
    cert: x509.Certificate
    key: PrivateKey
    cert_pem: bytes
    key_pem: bytes
    created: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)


@dataclass
class Leaf:
    spec: LeafSpec
    cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes
    reason: str | None = None  # why it was (re)issued in this call; None when the existing one was kept


@dataclass
class Pki:
    directory: Path
    cluster: ClusterSpec
    authorities: dict[str, Authority]
    leaves: dict[str, Leaf]
    sa_key_pem: bytes
    sa_pub_pem: bytes
    changes: list[str] = field(default_factory=list)  # what this call created or reissued, one line each
    warnings: list[str] = field(default_factory=list)
    # sha256 of key files known to pass the full RSA check (VALIDATED_KEYS), and of those in use now
    validated_keys: set[str] = field(default_factory=set)
    keys_in_use: set[str] = field(default_factory=set)

    def cert(self, id: str) -> bytes:
        if id in self.authorities:
            return self.authorities[id].cert_pem
        return self.leaves[id].cert_pem

    def key(self, id: str) -> bytes:
        if id in self.authorities:
            return self.authorities[id].key_pem
        return self.leaves[id].key_pem


# sha256 of each private key file that passed cryptography's full RSA consistency check once: loading
# ~20 keys with the check costs about a second of CPU on every run, without it a few milliseconds. A key
# file whose content changed (or a new PKI directory) is checked again.
VALIDATED_KEYS = ".validated-keys"


def _load_key(pem: bytes, pki: Pki) -> PrivateKey:
    digest = hashlib.sha256(pem).hexdigest()
    key = load_key(pem, validated=digest in pki.validated_keys)
    pki.keys_in_use.add(digest)
    return key


def _record_keys(directory: Path, pki: Pki) -> None:
    for authority in pki.authorities.values():
        pki.keys_in_use.add(hashlib.sha256(authority.key_pem).hexdigest())
    for leaf in pki.leaves.values():
        pki.keys_in_use.add(hashlib.sha256(leaf.key_pem).hexdigest())
    pki.keys_in_use.add(hashlib.sha256(pki.sa_key_pem).hexdigest())
    text = "".join(f"{digest}\n" for digest in sorted(pki.keys_in_use)).encode()
    if _read(directory / VALIDATED_KEYS) != text:
        write_atomic(directory / VALIDATED_KEYS, text, KEY_MODE)


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


def _ensure_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start (a key is never readable by others, not even briefly)."""
    _ensure_dir(path.parent)
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _fix_mode(path: Path, mode: int) -> None:
    if path.exists() and path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)


@contextlib.contextmanager
def locked(directory: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``<directory>/.lock`` (flock): one process, or one host's preparation, changes the PKI at a time."""
    _ensure_dir(directory)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, KEY_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise PKIError(
                        f"{directory}/.lock is held by another process for over {timeout:.0f} s "
                        "(another run on the same PKI?)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _authority(directory: Path, id: str, cluster: ClusterSpec, now: dt.datetime, keys: KeyFactory, pki: Pki) -> None:
    crt_path, key_path = directory / f"{id}.crt", directory / f"{id}.key"
    crt, key = _read(crt_path), _read(key_path)
    if crt is None and key is None:
        private = keys(cluster.key_algorithm)
        cert = make_ca(CAS[id], private, now, cluster.ca_days)
        authority = Authority(id, cert, private, cert_pem(cert), key_pem(private), created=True)
        write_atomic(key_path, authority.key_pem, KEY_MODE)
        write_atomic(crt_path, authority.cert_pem, CERT_MODE)
        pki.changes.append(f"created {id} (CA, valid until {cert.not_valid_after_utc:%Y-%m-%d})")
        pki.authorities[id] = authority
        return
    if crt is None or key is None:
        missing = crt_path if crt is None else key_path
        raise PKIError(
            f"{missing} is missing but its pair is there: restore it from your backup of {directory}. "
            "A CA is never regenerated over an existing one (every certificate of the cluster hangs on it)."
        )
    try:
        cert, private = load_cert(crt), _load_key(key, pki)
    except ValueError as error:
        raise PKIError(f"{crt_path} or {key_path} cannot be read: {error}") from None
    if not is_ca(cert):
        raise PKIError(f"{crt_path} is not a CA certificate")
    if not key_matches(cert, private):
        raise PKIError(f"{key_path} is not the key of {crt_path}: restore the pair from your backup")
    if cert.not_valid_after_utc <= now:
        raise PKIError(
            f"{crt_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: rotating a CA is a cluster-wide "
            "operation; move the directory aside to start a new PKI, then re-run every host"
        )
    if cert.not_valid_after_utc - now <= dt.timedelta(days=max(cluster.renew_before_days, 365)):
        pki.warnings.append(f"CA {id} expires on {cert.not_valid_after_utc:%Y-%m-%d}: plan its rotation")
    _fix_mode(key_path, KEY_MODE)
    pki.authorities[id] = Authority(id, cert, private, crt, key)


def _service_account(directory: Path, keys: KeyFactory, pki: Pki) -> None:
    key_path, pub_path = directory / "sa.key", directory / "sa.pub"
    existing = _read(key_path)
    if existing is None:
        private = keys(SA_KEY_ALGORITHM)
        pki.sa_key_pem = key_pem(private)
        write_atomic(key_path, pki.sa_key_pem, KEY_MODE)
        pki.changes.append(f"created sa.key ({SA_KEY_ALGORITHM})")
    else:
        try:
            private = _load_key(existing, pki)
        except ValueError as error:
            raise PKIError(f"{key_path} cannot be read: {error}") from None
        pki.sa_key_pem = existing
        _fix_mode(key_path, KEY_MODE)
    pki.sa_pub_pem = public_pem(private)
    if _read(pub_path) != pki.sa_pub_pem:
        write_atomic(pub_path, pki.sa_pub_pem, CERT_MODE)


def _leaf(directory: Path, spec: LeafSpec, cluster: ClusterSpec, now: dt.datetime, keys: KeyFactory, pki: Pki) -> None:
    crt_path, key_path = directory / f"{spec.id}.crt", directory / f"{spec.id}.key"
    crt, key = _read(crt_path), _read(key_path)
    ca = pki.authorities[spec.ca]
    reason: str | None
    if crt is None or key is None:
        reason = "missing"
    else:
        try:
            cert, private = load_cert(crt), _load_key(key, pki)
        except ValueError as error:
            reason = f"unreadable ({error})"
        else:
            renew_before = dt.timedelta(days=cluster.renew_before_days)
            reason = reissue_reason(cert, private, spec, ca.cert, now, renew_before, cluster.key_algorithm)
            if reason is None:
                _fix_mode(key_path, KEY_MODE)
                pki.leaves[spec.id] = Leaf(spec, cert, crt, key)
                return
    # a new key with every new certificate (never reuse the key of a certificate being replaced)
    private = keys(cluster.key_algorithm)
    cert = issue(spec, private, ca.cert, ca.key, now, cluster.leaf_days)
    leaf = Leaf(spec, cert, cert_pem(cert), key_pem(private), reason)
    write_atomic(key_path, leaf.key_pem, KEY_MODE)
    write_atomic(crt_path, leaf.cert_pem, CERT_MODE)
    pki.changes.append(f"issued {spec.id}: {reason}")
    pki.leaves[spec.id] = leaf


def ensure(directory: Path, cluster: ClusterSpec, now: dt.datetime | None = None, keys: KeyFactory = new_key) -> Pki:
    """Load the cluster's PKI from ``directory``, creating or reissuing only what must be.

    + now: the time every check is made at (timezone-aware; default: the current time)
    + keys: makes private keys by algorithm name (tests hand out pre-made ones: RSA generation is slow)
    """
    moment = _utc(now)
    specs = leaf_specs(cluster)
    directory = directory.expanduser()
    with locked(directory):
        _ensure_dir(directory)
        pki = Pki(directory, cluster, {}, {}, b"", b"")
        pki.validated_keys = set((_read(directory / VALIDATED_KEYS) or b"").decode(errors="replace").split())
        for id in CAS:
            _authority(directory, id, cluster, moment, keys, pki)
        _service_account(directory, keys, pki)
        for spec in specs:
            _leaf(directory, spec, cluster, moment, keys, pki)
        _record_keys(directory, pki)
        for path in directory.rglob("*"):
            if path.is_dir():
                _fix_mode(path, DIR_MODE)
    return pki


def describe(pki: Pki) -> list[str]:
    """One line per certificate: id, subject, expiry (what ``kubeadm certs check-expiration`` shows)."""
    lines = []
    for id, authority in pki.authorities.items():
        lines.append(f"{id:40} CA  until {authority.cert.not_valid_after_utc:%Y-%m-%d}  {algorithm_of(authority.key)}")
    for id, leaf in pki.leaves.items():
        lines.append(f"{id:40} {leaf.spec.ca:14} until {leaf.cert.not_valid_after_utc:%Y-%m-%d}")
    return lines
