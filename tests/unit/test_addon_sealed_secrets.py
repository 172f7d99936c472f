"""The sealed-secrets addon: its manifest for a two-host inventory (the CRD, least-privilege RBAC, a restricted
controller that never makes its own key), the sealing key taken from the cluster's PKI directory (made once,
kept, retired pairs pushed too), the repository's SealedSecrets as their own set, bad settings and files
refused by name, and ``spectra seal`` handing kubeseal the PKI's certificate."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pyinfra.api import DeployError

from deploys import addon
from deploys.components import cluster_addons, sealed_secrets
from deploys.components import pki as pki_component
from facts.addons import AddonSets
from spectra.pki import sealing
from spectra.pki.x509 import PKIError, cert_pem, key_pem, make_ca
from tests.unit.pki_support import key_factory
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

ADDONS_DIR = "/etc/kubernetes/addons"
STAGED = f"{ADDONS_DIR}/sealed-secrets.yaml.spectra-new"
FILES_STAGED = f"{ADDONS_DIR}/sealed-secrets-files.yaml.spectra-new"
SPECTRA = str(Path(sys.executable).parent / "spectra")
REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sealing_key() -> rsa.RSAPrivateKey:
    """One real sealing key (RSA 4096, a second or so to make) for the module."""
    return sealing.new_sealing_key()


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sealed-secrets") / "pki"


@pytest.fixture(autouse=True)
def fast_keys(monkeypatch: pytest.MonkeyPatch, sealing_key: rsa.RSAPrivateKey) -> None:
    monkeypatch.setattr(pki_component, "key_factory", key_factory())
    monkeypatch.setattr(sealed_secrets, "key_factory", lambda: sealing_key)


def hosts(pki_dir: Path, **data: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    shared = {"pki_dir": str(pki_dir), **data}
    cp = {**shared, "roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11"}
    return cp, {"node2": {**shared, "roles": ["workers"], "ssh_hostname": "10.0.0.12"}}


def run(component: Any, pki_dir: Path, facts: dict[Any, Any] | None = None, **data: Any) -> Any:
    cp, others = hosts(pki_dir, **data)
    return run_component(component, facts={AddonSets: {}} if facts is None else facts, data=cp, others=others)


def manifest(pki_dir: Path, **data: Any) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(run(sealed_secrets.COMPONENT, pki_dir, **data).uploads[STAGED]) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (one,) = by_kind(docs)[("Deployment", "sealed-secrets-controller")]["spec"]["template"]["spec"]["containers"]
    return dict(one)


def test_every_object_of_the_defaults(pki_dir: Path) -> None:
    docs = manifest(pki_dir)
    assert [(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")) for doc in docs] == [
        ("CustomResourceDefinition", "sealedsecrets.bitnami.com", None),
        ("ServiceAccount", "sealed-secrets-controller", "sealed-secrets"),
        ("ClusterRole", "secrets-unsealer", None),
        ("ClusterRoleBinding", "sealed-secrets-controller", None),
        ("Role", "sealed-secrets-cert-reader", "sealed-secrets"),
        ("RoleBinding", "sealed-secrets-cert-reader", "sealed-secrets"),
        ("Secret", "sealed-secrets-key", "sealed-secrets"),
        ("Deployment", "sealed-secrets-controller", "sealed-secrets"),
        ("Service", "sealed-secrets-controller", "sealed-secrets"),
    ]
    assert all(doc["metadata"]["labels"]["spectra.io/addon-set"] == "sealed-secrets" for doc in docs)
    crd = by_kind(docs)[("CustomResourceDefinition", "sealedsecrets.bitnami.com")]["spec"]
    assert (crd["group"], crd["scope"], crd["names"]["kind"]) == ("bitnami.com", "Namespaced", "SealedSecret")
    (version,) = crd["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["encryptedData"]
    assert set(spec["properties"]) == {"data", "encryptedData", "template"}


def test_the_namespace_is_restricted() -> None:
    assert cluster_addons.namespaces([sealed_secrets.ADDON], sealed_secrets.DEFAULTS) == {
        "sealed-secrets": "restricted"
    }
    assert cluster_addons.namespaces([sealed_secrets.ADDON], {"sealed_secrets_enabled": False}) == {}


def test_the_controller_never_makes_its_own_key_and_is_restricted(pki_dir: Path) -> None:
    docs = manifest(pki_dir)
    one = container(docs)
    assert one["image"] == "docker.io/bitnami/sealed-secrets-controller:0.40.0"
    assert one["args"] == [
        "--key-prefix=sealed-secrets-key",
        "--key-renew-period=0",
        "--update-status",
        "--listen-addr=:8080",
        "--listen-metrics-addr=:8081",
    ]
    assert "command" not in one  # the image's entrypoint, as upstream's
    assert one["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert one["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert one["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "500m", "memory": "256Mi"}}  # fmt: skip
    assert [env["name"] for env in one["env"]] == ["GOMAXPROCS", "GOMEMLIMIT"]
    pod = by_kind(docs)[("Deployment", "sealed-secrets-controller")]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert pod["serviceAccountName"] == "sealed-secrets-controller"
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    service = by_kind(docs)[("Service", "sealed-secrets-controller")]["spec"]
    # kubeseal --fetch-cert proxies to the first port
    assert [port["name"] for port in service["ports"]] == ["http", "metrics"]
    assert service["selector"] == {"app.kubernetes.io/name": "sealed-secrets"}


def test_rbac_is_least_privilege(pki_dir: Path) -> None:
    docs = by_kind(manifest(pki_dir))
    rules = {(rule["apiGroups"][0], tuple(rule["resources"])): rule["verbs"]
             for rule in docs[("ClusterRole", "secrets-unsealer")]["rules"]}  # fmt: skip
    assert rules == {
        ("bitnami.com", ("sealedsecrets",)): ["get", "list", "watch"],
        ("bitnami.com", ("sealedsecrets/status",)): ["update"],
        ("", ("secrets",)): ["get", "list", "watch", "create", "update"],  # no delete
        ("", ("events",)): ["create", "patch"],
    }
    binding = docs[("ClusterRoleBinding", "sealed-secrets-controller")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sealed-secrets-controller", "namespace": "sealed-secrets"}
    ]
    reader = docs[("Role", "sealed-secrets-cert-reader")]["rules"]
    assert [(rule["resources"], rule["verbs"]) for rule in reader] == [(["services"], ["get"]),
                                                                        (["services/proxy"], ["get"])]  # fmt: skip
    assert reader[1]["resourceNames"] == [
        "sealed-secrets-controller", "http:sealed-secrets-controller:", "http:sealed-secrets-controller:http",
    ]  # fmt: skip
    assert docs[("RoleBinding", "sealed-secrets-cert-reader")]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}
    ]


def test_the_key_secret_is_the_pki_sealing_key(pki_dir: Path, sealing_key: rsa.RSAPrivateKey) -> None:
    docs = by_kind(manifest(pki_dir))
    secret = docs[("Secret", "sealed-secrets-key")]
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["labels"]["sealedsecrets.bitnami.com/sealed-secrets-key"] == "active"
    folder = pki_dir / "sealed-secrets"
    assert secret["stringData"] == {
        "tls.crt": (folder / "sealing.crt").read_text(), "tls.key": (folder / "sealing.key").read_text(),
    }  # fmt: skip
    assert (folder / "sealing.key").read_bytes() == key_pem(sealing_key)
    cert = x509.load_pem_x509_certificate((folder / "sealing.crt").read_bytes())
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 4096
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=3649)
    assert cert.subject == cert.issuer  # self-signed, as the controller's own
    modes = {
        path.name: path.stat().st_mode & 0o777 for path in (folder, folder / "sealing.key", folder / "sealing.crt")
    }
    assert modes == {"sealed-secrets": 0o700, "sealing.key": 0o600, "sealing.crt": 0o644}
    # the pods carry the certificates' digest: a new key restarts the controller, which reads keys at start
    template = docs[("Deployment", "sealed-secrets-controller")]["spec"]["template"]["metadata"]
    digest = hashlib.sha256((folder / "sealing.crt").read_bytes()).hexdigest()
    assert template["annotations"] == {"spectra.io/sealing-keys-sha256": digest}


def test_the_key_is_made_once_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = manifest(tmp_path / "pki")
    monkeypatch.setattr(sealed_secrets, "key_factory", lambda: pytest.fail("a second key was made"))
    assert manifest(tmp_path / "pki") == first


def test_a_converged_set_runs_nothing(pki_dir: Path) -> None:
    kept = run(sealed_secrets.COMPONENT, pki_dir).uploads[STAGED]
    state = {"sealed-secrets": {"kept": kept, "drift": [], "error": None}}
    result = run(sealed_secrets.COMPONENT, pki_dir, facts={AddonSets: state})
    assert result.commands == [] and result.noops == ["addon set sealed-secrets: applied as rendered, no drift"]


def test_half_a_sealing_pair_stops_the_deploy(tmp_path: Path) -> None:
    manifest(tmp_path / "pki")
    (tmp_path / "pki" / "sealed-secrets" / "sealing.crt").unlink()
    with pytest.raises(DeployError, match=r"sealing.crt is missing but its pair is there: restore it from"):
        manifest(tmp_path / "pki")


def retire(folder: Path, name: str, days_ago: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "retired").mkdir(exist_ok=True)
    (folder / "retired" / f"{name}.key").write_bytes(key_pem(key))
    cert = sealing.sealing_cert(key, "test", dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago))
    (folder / "retired" / f"{name}.crt").write_bytes(cert_pem(cert))


def test_retired_pairs_are_pushed_to_decrypt_older_files(tmp_path: Path) -> None:
    before = by_kind(manifest(tmp_path / "pki"))
    folder = tmp_path / "pki" / "sealed-secrets"
    retire(folder, "2025", days_ago=400)
    docs = by_kind(manifest(tmp_path / "pki"))
    old = docs[("Secret", "sealed-secrets-key-retired-2025")]
    assert old["metadata"]["labels"]["sealedsecrets.bitnami.com/sealed-secrets-key"] == "active"
    assert old["stringData"]["tls.key"] == (folder / "retired" / "2025.key").read_text()
    assert docs[("Secret", "sealed-secrets-key")] == before[("Secret", "sealed-secrets-key")]

    def digest(found: dict[tuple[str, str], dict[str, Any]]) -> str:
        return str(found[("Deployment", "sealed-secrets-controller")]["spec"]["template"]["metadata"]["annotations"])

    assert digest(docs) != digest(before)  # the controller restarts to load it
    # a "retired" pair newer than the active one would become the controller's sealing key: refused
    retire(folder, "newer", days_ago=-1)
    with pytest.raises(DeployError, match=r"retired/newer.crt starts after the active sealing.crt"):
        manifest(tmp_path / "pki")


def test_a_key_that_is_not_rsa_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = tmp_path / "sealed-secrets"
    folder.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "sealing.key").write_bytes(key_pem(key))
    (folder / "sealing.crt").write_bytes(cert_pem(make_ca("sealed-secrets", key, NOW, 3650)))
    with pytest.raises(PKIError, match="sealing.key is not an RSA key: the sealed-secrets controller takes RSA"):
        sealing.ensure(tmp_path, "test", now=NOW)
    (folder / "sealing.crt").write_bytes(b"")
    with pytest.raises(PKIError, match="cannot be read"):
        sealing.ensure(tmp_path, "test", now=NOW)


# --- the repository's SealedSecrets -------------------------------------------------------------------------


def sealed(name: str, namespace: str = "shop-api", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": {"encryptedData": {"password": "AgB" + name},
                 "template": {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": None}}},
        **extra,
    }  # fmt: skip


def write(path: Path, *documents: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, explicit_start=True))
    return path


def files_manifest(pki_dir: Path, files: Any) -> list[dict[str, Any]]:
    result = run(sealed_secrets.FILES_COMPONENT, pki_dir, sealed_secrets_files=files)
    return [doc for doc in yaml.safe_load_all(result.uploads[FILES_STAGED]) if doc]


def test_the_files_become_their_own_set(pki_dir: Path, tmp_path: Path) -> None:
    write(tmp_path / "secrets" / "b" / "web.yaml", sealed("web", "shop-web"))
    write(tmp_path / "secrets" / "a.yaml", sealed("db"), sealed("cache"))
    (tmp_path / "secrets" / "README.md").write_text("not a manifest")
    single = write(tmp_path / "etl.yml", sealed("etl", "data-etl"))
    docs = files_manifest(pki_dir, [str(tmp_path / "secrets"), str(single)])
    assert [(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in docs] == [
        ("shop-api", "db"), ("shop-api", "cache"), ("shop-web", "web"), ("data-etl", "etl"),
    ]  # fmt: skip
    first = docs[0]
    assert first["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "spectra",
                                           "spectra.io/addon-set": "sealed-secrets-files"}  # fmt: skip
    assert "creationTimestamp" not in first["metadata"]  # kubeseal's nulls dropped
    assert "creationTimestamp" not in first["spec"]["template"]["metadata"]
    assert first["spec"]["encryptedData"] == {"password": "AgBdb"}
    # one path as text (--data sealed_secrets_files=PATH) is a list of one
    assert files_manifest(pki_dir, str(single)) == docs[3:]


def test_the_files_set_waits_for_nothing_and_is_applied_after_a_dry_run(pki_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "db.yaml", sealed("db"))
    result = run(sealed_secrets.FILES_COMPONENT, pki_dir, sealed_secrets_files=[str(path)])
    kubectl = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
    apply = f"apply --server-side --field-manager=spectra --force-conflicts -f {FILES_STAGED}"
    assert result.commands[1:] == [
        f"chmod 0600 {FILES_STAGED}",
        f"{kubectl} {apply} --dry-run=server -o name",
        f"{kubectl} {apply}",
        f"mv -f {FILES_STAGED} {ADDONS_DIR}/sealed-secrets-files.yaml",
    ]


def test_relative_paths_are_read_from_the_repository(tmp_path: Path) -> None:
    write(tmp_path / "secrets" / "db.yaml", sealed("db"))
    assert sealed_secrets.manifest_files(["secrets"], base=tmp_path) == [tmp_path / "secrets" / "db.yaml"]
    assert sealed_secrets.REPO == REPO


def test_no_files_no_objects(pki_dir: Path) -> None:
    result = run(sealed_secrets.FILES_COMPONENT, pki_dir)
    assert result.commands == [] and result.noops == ["addon set sealed-secrets-files: no objects, none applied before"]


def test_a_file_taken_out_is_pruned(pki_dir: Path, tmp_path: Path) -> None:
    kept = run(sealed_secrets.FILES_COMPONENT, pki_dir,
               sealed_secrets_files=[str(write(tmp_path / "db.yaml", sealed("db")))]).uploads[FILES_STAGED]  # fmt: skip
    state = {"sealed-secrets-files": {"kept": kept, "drift": [], "error": None}}
    result = run(sealed_secrets.FILES_COMPONENT, pki_dir, facts={AddonSets: state})
    kubectl = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
    assert result.commands == [
        f"{kubectl} delete -n shop-api --ignore-not-found --wait=false SealedSecret.v1alpha1.bitnami.com/db",
        f"rm -f {ADDONS_DIR}/sealed-secrets-files.yaml",
    ]


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "a"}, "data": {"k": "dg=="}}],
         "a plain Secret; only SealedSecrets belong in the repository"),
        ([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "a"}}],
         "v1/ConfigMap, expected a bitnami.com/v1alpha1 SealedSecret"),
        ([sealed("db", namespace=None)], "metadata.namespace None: the namespace it was sealed for"),  # type: ignore[arg-type]
        ([sealed("Not_A_Name")], "metadata.name 'Not_A_Name' is not a Secret name"),
        ([{**sealed("db"), "spec": {"encryptedData": {}}}], "spec.encryptedData holds nothing"),
        ([sealed("db"), sealed("db")], r"\(document 2\): SealedSecret shop-api/db is also in .*\(document 1\)"),
        (["just text"], "not a Kubernetes object"),
    ],
)  # fmt: skip
def test_bad_files_stop_the_deploy(pki_dir: Path, tmp_path: Path, documents: list[Any], message: str) -> None:
    path = write(tmp_path / "bad.yaml", *documents)
    with pytest.raises(DeployError, match=message):
        run(sealed_secrets.FILES_COMPONENT, pki_dir, sealed_secrets_files=[str(path)])


def test_a_missing_path_stops_the_deploy(pki_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"sealed_secrets_files: 'nowhere/' .* is neither a file nor a directory"):
        run(sealed_secrets.FILES_COMPONENT, pki_dir, sealed_secrets_files=["nowhere/"])
    (tmp_path / "broken.yaml").write_text("a: [")
    with pytest.raises(DeployError, match=r"sealed_secrets_files: .*broken.yaml: while parsing"):
        run(sealed_secrets.FILES_COMPONENT, pki_dir, sealed_secrets_files=[str(tmp_path / "broken.yaml")])


# --- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sealed_secrets_image": "Not An Image"}, "sealed_secrets_image='Not An Image': an image reference"),
        ({"sealed_secrets_cpu_limit": "lots"}, "sealed_secrets_cpu_limit='lots': a Kubernetes quantity"),
        ({"sealed_secrets_memory_request": 64}, "sealed_secrets_memory_request=64: a Kubernetes quantity"),
        ({"sealed_secrets_files": [""]}, r"sealed_secrets_files=\[''\]: a list of SealedSecret files"),
        ({"sealed_secrets_files": {"a": 1}}, "sealed_secrets_files=.*: a list"),
        ({"sealed_secrets_files": [1]}, "sealed_secrets_files=\\[1\\]"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    problems = sealed_secrets.check({**sealed_secrets.DEFAULTS, **data})
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_defaults_pass_and_a_path_as_text_is_a_list() -> None:
    assert sealed_secrets.check(sealed_secrets.DEFAULTS) == []
    assert sealed_secrets.check({**sealed_secrets.DEFAULTS, "sealed_secrets_files": "secrets/"}) == []
    assert sealed_secrets.file_list("secrets/") == ["secrets/"] and sealed_secrets.file_list("") == []


def test_bad_settings_stop_the_deploy_before_any_key_is_made(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="sealed_secrets_cpu_request"):
        run(sealed_secrets.COMPONENT, tmp_path / "pki", sealed_secrets_cpu_request="many")
    assert not (tmp_path / "pki" / "sealed-secrets").exists()


def test_disabled_pushes_nothing(pki_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "db.yaml", sealed("db"))
    for component in (sealed_secrets.COMPONENT, sealed_secrets.FILES_COMPONENT):
        result = run(component, pki_dir, sealed_secrets_enabled=False, sealed_secrets_files=[str(path)])
        assert result.uploads == {} and result.ops == []
    assert sealed_secrets.FILES_ADDON.switch == sealed_secrets.ADDON.switch == "sealed_secrets_enabled"


def test_both_sets_are_in_the_addons_entry_file_controller_first() -> None:
    text = (REPO / "deploys" / "addons.py").read_text()
    assert text.index("sealed_secrets.COMPONENT") < text.index("sealed_secrets.FILES_COMPONENT")
    assert text.index("cluster_addons.COMPONENT") < text.index("sealed_secrets.COMPONENT")
    assert addon.template_files("sealed-secrets") == tuple(
        sorted((*sealed_secrets.TEMPLATES, *sealed_secrets.FILES_TEMPLATES))
    )


# --- spectra seal -------------------------------------------------------------------------------------------

INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group

    _HOSTS = [
        HostRecord("@fake/n1", {}, roles=("control_plane", "etcd"), zone="lab-a"),
        HostRecord("@fake/n2", {}, roles=("workers",), zone="lab-b"),
    ]
    globals().update(build_groups(_HOSTS, inventory_group=file_group(__file__)))
"""

# a stand-in for kubeseal: records its arguments and standard input, answers with a SealedSecret
FAKE_KUBESEAL = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/args"
cat > "$(dirname "$0")/stdin"
cat <<'YAML'
---
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata:
  creationTimestamp: null
  name: db
  namespace: shop-api
spec:
  encryptedData:
    password: AgBciphertext
YAML
"""


@pytest.fixture
def seal_setup(tmp_path: Path, sealing_key: rsa.RSAPrivateKey) -> tuple[Path, Path, Path]:
    inventory = tmp_path / "inv.py"
    inventory.write_text(textwrap.dedent(INVENTORY))
    fake = tmp_path / "bin" / "kubeseal"
    fake.parent.mkdir()
    fake.write_text(FAKE_KUBESEAL)
    fake.chmod(0o755)
    pki_dir = tmp_path / "pki"
    sealing.ensure(pki_dir, "spectra", keys=lambda: sealing_key)  # made here: the CLI finds it
    return inventory, fake, pki_dir


def seal(inventory: Path, pki_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [SPECTRA, "seal", str(inventory), "--data", f"pki_dir={pki_dir}", "--data", "fluentd_enabled=False",
               *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ))


def test_seal_hands_kubeseal_the_pki_certificate_and_the_secret(seal_setup: tuple[Path, Path, Path]) -> None:
    inventory, fake, pki_dir = seal_setup
    secret_file = fake.parent / "token"
    secret_file.write_bytes(b"abc\n")
    result = seal(inventory, pki_dir, "--namespace", "shop-api", "--name", "db", "--from-literal", "password=s3=cr",
                  "--from-file", str(secret_file), "--kubeseal", str(fake))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["spec"]["encryptedData"] == {"password": "AgBciphertext"}
    cert = pki_dir / "sealed-secrets" / "sealing.crt"
    assert (fake.parent / "args").read_text().split() == [
        "--cert", str(cert), "--format", "yaml", "--scope", "strict",
    ]  # fmt: skip
    assert yaml.safe_load((fake.parent / "stdin").read_text()) == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop-api"}, "type": "Opaque",
        "data": {"password": "czM9Y3I=", "token": "YWJjCg=="},
    }  # fmt: skip


def test_seal_prints_the_certificate_and_refuses_bad_arguments(seal_setup: tuple[Path, Path, Path]) -> None:
    inventory, fake, pki_dir = seal_setup
    printed = seal(inventory, pki_dir, "--print-cert")
    assert printed.returncode == 0 and printed.stdout == (pki_dir / "sealed-secrets" / "sealing.crt").read_text()
    for args, message in (
        (["--namespace", "shop-api", "--name", "db"], "nothing to seal"),
        (["--namespace", "Shop", "--name", "db", "--from-literal", "a=b"], "--namespace 'Shop': a namespace name"),
        (["--namespace", "a", "--name", "db", "--from-literal", "a=b", "--from-literal", "a=c"], "given twice"),
        (["--namespace", "a", "--name", "db", "--from-literal", "a=b", "--kubeseal", "/nonexistent"], "no kubeseal"),
    ):
        result = seal(inventory, pki_dir, *args, *([] if "--kubeseal" in args else ["--kubeseal", str(fake)]))
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stdout == ""


def test_validate_takes_one_path_as_text(seal_setup: tuple[Path, Path, Path]) -> None:
    inventory, _, _ = seal_setup
    command = [SPECTRA, "validate", str(inventory), "--data", "fluentd_enabled=False"]
    ok = subprocess.run([*command, "--data", "sealed_secrets_files=secrets/"], capture_output=True, text=True,
                        timeout=120, cwd=REPO)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*command, "--data", "sealed_secrets_files=5"], capture_output=True, text=True, timeout=120,
                         cwd=REPO)  # fmt: skip
    assert bad.returncode == 2 and "sealed_secrets_files" in bad.stderr
