"""Shared pieces of the PKI unit tests: keys made once per session, a small cluster, a fixed clock."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from functools import cache

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spectra.pki import ClusterSpec, Member
from spectra.pki.x509 import PrivateKey

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

CP1 = Member("cp1", "10.0.0.11")
CP2 = Member("cp2", "10.0.0.12")
W1 = Member("w1", "10.0.1.21")
W2 = Member("w2", "w2.dc1.example.com")  # reached by name: its address is a DNS SAN


def cluster(**overrides: object) -> ClusterSpec:
    values: dict[str, object] = {
        "name": "test",
        "control_plane": (CP1, CP2),
        "etcd": (CP1, CP2),
        "nodes": (CP1, CP2, W1, W2),
        "apiserver_sans": ("lb.example.com", "10.0.0.10"),
        "key_algorithm": "ecdsa-p256",
    }
    values.update(overrides)
    return ClusterSpec(**values)  # type: ignore[arg-type]


@cache
def _rsa_pool() -> tuple[rsa.RSAPrivateKey, ...]:
    # RSA 2048 generation costs ~0.1 s a key: a few per session, handed out in turn
    return tuple(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(6))


def key_factory() -> Callable[[str], PrivateKey]:
    """A key maker for ``spectra.pki.ensure``: fresh ECDSA keys (fast), RSA keys from the session pool."""
    pool = itertools.cycle(_rsa_pool())

    def make(algorithm: str) -> PrivateKey:
        if algorithm == "ecdsa-p256":
            return ec.generate_private_key(ec.SECP256R1())
        assert algorithm == "rsa-2048", algorithm
        return next(pool)

    return make
