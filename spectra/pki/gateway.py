"""The API gateway's certificate authority and serving certificate, in the cluster's PKI directory.

The gateway serves the platform's public names, so its trust root is its own CA (``gateway/ca.crt``), not the
cluster CA: clients that trust the gateway never trust the apiserver's or the kubelets' issuer, and the cluster
CA never signs a name outside the cluster. One serving certificate (``gateway/server.crt``) names every route
host that no user-supplied certificate covers; it is issued again when that list changes, when it enters the
renewal window, or when its key or CA no longer match (the same rules as the cluster's leaves). Files under
``<pki_dir>/gateway/`` (keys 0600, directory 0700), so the PKI backup holds them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from spectra.pki import store
from spectra.pki.x509 import (
    LeafSpec,
    PKIError,
    PrivateKey,
    cert_pem,
    is_ca,
    issue,
    key_matches,
    key_pem,
    load_cert,
    load_key,
    make_ca,
    new_key,
    reissue_reason,
    split_sans,
)

DIRECTORY = "gateway"
CA_NAME = "spectra-gateway-ca"


@dataclass(frozen=True)
class GatewayPki:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    changes: tuple[str, ...]


def _authority(directory: Path, algorithm: str, days: int, now: dt.datetime, changes: list[str]):
    crt_path, key_path = directory / "ca.crt", directory / "ca.key"
    crt, key = store._read(crt_path), store._read(key_path)
    if crt is None and key is None:
        private = new_key(algorithm)
        cert = make_ca(CA_NAME, private, now, days)
        store.write_atomic(key_path, key_pem(private), store.KEY_MODE)
        store.write_atomic(crt_path, cert_pem(cert), store.CERT_MODE)
        changes.append(f"created {DIRECTORY}/ca (CA, valid until {cert.not_valid_after_utc:%Y-%m-%d})")
        return cert, private
    if crt is None or key is None:
        raise PKIError(f"{crt_path if crt is None else key_path} is missing but its pair is there: restore it")
    try:
        cert, private = load_cert(crt), load_key(key)
    except ValueError as error:
        raise PKIError(f"{crt_path} or {key_path} cannot be read: {error}") from None
    if not is_ca(cert) or not key_matches(cert, private):
        raise PKIError(f"{crt_path} and {key_path} are not a CA and its key: restore the pair from your backup")
    if cert.not_valid_after_utc <= now:
        raise PKIError(f"{crt_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: move it aside to make a new one")
    return cert, private


def ensure(
    pki_dir: Path,
    names: tuple[str, ...],
    algorithm: str,
    ca_days: int,
    leaf_days: int,
    renew_before_days: int,
    now: dt.datetime | None = None,
) -> GatewayPki:
    """The gateway CA and a serving certificate for ``names`` (DNS names), made or reissued only as needed."""
    if not names:
        raise PKIError("the gateway's certificate needs at least one name")
    moment = now or dt.datetime.now(dt.UTC)
    directory = pki_dir.expanduser() / DIRECTORY
    changes: list[str] = []
    with store.locked(pki_dir.expanduser()):
        directory.mkdir(parents=True, exist_ok=True, mode=store.DIR_MODE)
        ca_cert, ca_key = _authority(directory, algorithm, ca_days, moment, changes)
        dns, ips = split_sans(names)
        spec = LeafSpec(f"{DIRECTORY}/server", "gateway-ca", dns[0] if dns else ips[0], (), dns, ips, server=True)
        crt_path, key_path = directory / "server.crt", directory / "server.key"
        crt, key = store._read(crt_path), store._read(key_path)
        reason: str | None = "missing"
        if crt is not None and key is not None:
            try:
                cert, private = load_cert(crt), load_key(key)
            except ValueError as error:
                reason = f"unreadable ({error})"
            else:
                renew = dt.timedelta(days=renew_before_days)
                reason = reissue_reason(cert, private, spec, ca_cert, moment, renew, algorithm)
        if reason is not None:
            fresh: PrivateKey = new_key(algorithm)
            issued = issue(spec, fresh, ca_cert, ca_key, moment, leaf_days)
            crt, key = cert_pem(issued), key_pem(fresh)
            store.write_atomic(key_path, key, store.KEY_MODE)
            store.write_atomic(crt_path, crt, store.CERT_MODE)
            changes.append(f"issued {DIRECTORY}/server: {reason}")
        assert crt is not None and key is not None
    return GatewayPki(cert_pem(ca_cert), crt, key, tuple(changes))
