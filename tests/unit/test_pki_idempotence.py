"""A re-run keeps valid certificates; expiry within the window, SAN/subject changes and a new CA reissue."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from spectra.pki import PKIError, ensure, kubeconfig, render
from spectra.pki.cluster import Member
from tests.unit.pki_support import CP1, NOW, W1, cluster, key_factory

pytestmark = pytest.mark.unit


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> set[str]:
    return {name for name in after if before.get(name) != after[name]}


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    ensure(tmp_path / "pki", cluster(), now=NOW, keys=key_factory())
    return tmp_path / "pki"


def test_second_run_changes_nothing(pki_dir: Path) -> None:
    before = snapshot(pki_dir)
    result = ensure(pki_dir, cluster(), now=NOW + dt.timedelta(days=100), keys=key_factory())
    assert result.changes == []
    assert snapshot(pki_dir) == before
    assert all(leaf.reason is None for leaf in result.leaves.values())
    assert not any(authority.created for authority in result.authorities.values())


def test_keys_get_the_full_check_once_per_content(pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spectra.pki import store

    checked: list[bool] = []
    original = store.load_key

    def spy(pem: bytes, validated: bool = False) -> Any:
        checked.append(validated)
        return original(pem, validated=validated)

    monkeypatch.setattr(store, "load_key", spy)
    ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert checked and all(checked)  # the first run recorded every key it checked or made
    # a key whose sum is not on record (changed content, or a record lost) gets the full check again
    record = pki_dir / store.VALIDATED_KEYS
    apiserver = hashlib.sha256((pki_dir / "apiserver.key").read_bytes()).hexdigest()
    record.write_text(record.read_text().replace(f"{apiserver}\n", ""))
    checked.clear()
    ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert checked.count(False) == 1 and apiserver in record.read_text()
    record.unlink()
    checked.clear()
    ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert checked and not any(checked)


def test_expiry_within_window_reissues_all_leaves_but_no_ca(pki_dir: Path) -> None:
    before = snapshot(pki_dir)
    # leaves expire NOW + 365 days: at day 335 they are exactly 30 days from the end, inside the window
    result = ensure(pki_dir, cluster(), now=NOW + dt.timedelta(days=335), keys=key_factory())
    assert all(leaf.reason and "renewal window" in leaf.reason for leaf in result.leaves.values())
    names = changed(before, snapshot(pki_dir))
    assert "ca.crt" not in names and "ca.key" not in names and "sa.key" not in names
    assert {"apiserver.crt", "apiserver.key", "etcd/cp1/peer.crt", "nodes/w1/kubelet.crt"} <= names
    fresh = x509.load_pem_x509_certificate(result.cert("apiserver"))
    assert fresh.not_valid_after_utc == NOW + dt.timedelta(days=335 + 365)


def test_one_day_outside_window_keeps(pki_dir: Path) -> None:
    result = ensure(pki_dir, cluster(), now=NOW + dt.timedelta(days=334), keys=key_factory())
    assert result.changes == []


def test_window_is_a_setting(pki_dir: Path) -> None:
    result = ensure(pki_dir, cluster(renew_before_days=60), now=NOW + dt.timedelta(days=310), keys=key_factory())
    assert len(result.changes) == len(result.leaves)


def test_san_change_reissues_only_the_certificates_that_name_it(pki_dir: Path) -> None:
    moved = Member("w1", "10.0.1.99")
    spec = cluster(nodes=(CP1, cluster().nodes[1], moved, cluster().nodes[3]), apiserver_sans=("lb.example.com",))
    result = ensure(pki_dir, spec, now=NOW, keys=key_factory())
    reissued = {leaf.spec.id for leaf in result.leaves.values() if leaf.reason}
    assert reissued == {"apiserver", "nodes/w1/kubelet"}
    assert "to remove: ['10.0.0.10']" in (result.leaves["apiserver"].reason or "")
    assert "to add: ['10.0.1.99']" in (result.leaves["nodes/w1/kubelet"].reason or "")


def test_new_control_plane_reissues_apiserver_and_adds_its_certificates(pki_dir: Path) -> None:
    cp3 = Member("cp3", "10.0.0.13")
    base = cluster()
    spec = cluster(control_plane=(*base.control_plane, cp3), etcd=(*base.etcd, cp3), nodes=(*base.nodes, cp3))
    result = ensure(pki_dir, spec, now=NOW, keys=key_factory())
    assert {leaf.spec.id: leaf.reason for leaf in result.leaves.values() if leaf.reason} == {
        "apiserver": "SANs differ (to add: ['10.0.0.13', 'cp3'], to remove: [])",
        "etcd/cp3/server": "missing",
        "etcd/cp3/peer": "missing",
        "nodes/cp3/kubelet": "missing",
        "nodes/cp3/kubelet-client": "missing",
    }


def test_subject_change_reissues(pki_dir: Path) -> None:
    # a certificate on disk whose subject no longer matches: swap two leaves' files
    for suffix in ("crt", "key"):
        shutil.copy(pki_dir / f"scheduler.{suffix}", pki_dir / f"controller-manager.{suffix}")
    result = ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert result.changes == [
        "issued controller-manager: subject is CN=system:kube-scheduler, wanted CN=system:kube-controller-manager"
    ]


def test_missing_or_mismatched_key_reissues(pki_dir: Path) -> None:
    (pki_dir / "admin.key").unlink()
    shutil.copy(pki_dir / "scheduler.key", pki_dir / "kube-proxy.key")
    result = ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert result.changes == [
        "issued admin: missing",
        "issued kube-proxy: its key does not match the certificate",
    ]


def test_key_algorithm_change_reissues_leaves_not_cas(pki_dir: Path) -> None:
    result = ensure(pki_dir, cluster(key_algorithm="rsa-2048", nodes=(W1,)), now=NOW, keys=key_factory())
    assert result.leaves["admin"].reason == "key is ecdsa-p256, wanted rsa-2048"
    assert not any(authority.created for authority in result.authorities.values())


def test_new_ca_reissues_its_leaves_only(pki_dir: Path) -> None:
    for name in ("front-proxy-ca.crt", "front-proxy-ca.key"):
        (pki_dir / name).unlink()
    result = ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert result.authorities["front-proxy-ca"].created
    assert {leaf.spec.id for leaf in result.leaves.values() if leaf.reason} == {"front-proxy-client"}
    assert "CA changed" in (result.leaves["front-proxy-client"].reason or "")


def test_ca_is_never_regenerated_over_half_a_pair(pki_dir: Path) -> None:
    (pki_dir / "ca.key").unlink()
    with pytest.raises(PKIError, match="ca.key is missing but its pair is there: restore it"):
        ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert not (pki_dir / "ca.key").exists()


def test_ca_with_a_foreign_key_is_refused(pki_dir: Path) -> None:
    shutil.copy(pki_dir / "front-proxy-ca.key", pki_dir / "ca.key")
    with pytest.raises(PKIError, match="ca.key is not the key of"):
        ensure(pki_dir, cluster(), now=NOW, keys=key_factory())


def test_expired_ca_is_refused(pki_dir: Path) -> None:
    with pytest.raises(PKIError, match="expired on 2036"):
        ensure(pki_dir, cluster(), now=NOW + dt.timedelta(days=3651), keys=key_factory())


def test_modes_are_repaired(pki_dir: Path) -> None:
    (pki_dir / "ca.key").chmod(0o644)
    (pki_dir / "etcd").chmod(0o755)
    pki_dir.chmod(0o755)
    ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    assert (pki_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (pki_dir / "etcd").stat().st_mode & 0o777 == 0o700
    assert pki_dir.stat().st_mode & 0o777 == 0o700


def test_naive_now_is_refused(pki_dir: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ensure(pki_dir, cluster(), now=dt.datetime(2026, 3, 1), keys=key_factory())


def test_kubeconfigs(pki_dir: Path) -> None:
    result = ensure(pki_dir, cluster(), now=NOW, keys=key_factory())
    for name, user, leaf in [
        ("admin", "kubernetes-admin", "admin"),
        ("controller-manager", "system:kube-controller-manager", "controller-manager"),
        ("scheduler", "system:kube-scheduler", "scheduler"),
        ("kube-proxy", "system:kube-proxy", "kube-proxy"),
        ("kubelet", "system:node:w1", "nodes/w1/kubelet-client"),
    ]:
        document = yaml.safe_load(render(result, name, "https://127.0.0.1:6443", node_name="w1"))
        assert document["kind"] == "Config" and document["current-context"] == f"{user}@test"
        (cluster_entry,) = document["clusters"]
        assert cluster_entry["name"] == "test"
        assert cluster_entry["cluster"]["server"] == "https://127.0.0.1:6443"
        assert base64.b64decode(cluster_entry["cluster"]["certificate-authority-data"]) == result.cert("ca")
        (user_entry,) = document["users"]
        assert user_entry["name"] == user
        assert base64.b64decode(user_entry["user"]["client-certificate-data"]) == result.cert(leaf)
        assert base64.b64decode(user_entry["user"]["client-key-data"]) == result.key(leaf)
        (context,) = document["contexts"]
        assert context["context"] == {"cluster": "test", "user": user}


def test_kubeconfig_is_deterministic_and_needs_https() -> None:
    first = kubeconfig("c", "https://lb:6443", b"CA", "u", b"CERT", b"KEY")
    assert first == kubeconfig("c", "https://lb:6443", b"CA", "u", b"CERT", b"KEY")
    with pytest.raises(ValueError, match="https"):
        kubeconfig("c", "http://lb:6443", b"CA", "u", b"CERT", b"KEY")
