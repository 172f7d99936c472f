"""The Grafana addon's manifest: restricted pod on the pinned upstream image, the Prometheus datasource, every
dashboard file in a ConfigMap where the provider reads it, the admin password from a Secret (required, checked
by key), and bad dashboard files refused naming the file, by the deploy and by the check `spectra validate` runs.
The real apiserver checks this manifest in tests/lab/test_dashboards.py (Grafana does not run in the lab)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError

from deploys.components import cluster_addons, grafana
from facts.addons import AddonSets
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

CP = {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11", "grafana_admin_password": "correct-horse"}
STAGED = "/etc/kubernetes/addons/grafana.yaml.spectra-new"


def manifest(**data: Any) -> dict[tuple[str, str], dict[str, Any]]:
    result = run_component(grafana.COMPONENT, facts={AddonSets: {}}, data={**CP, **data})
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(result.uploads[STAGED])}


def pod(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return dict(docs[("Deployment", "grafana")]["spec"]["template"])


def mounts(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    (container,) = pod(docs)["spec"]["containers"]
    return {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}


def test_objects_of_the_set_in_the_monitoring_namespace() -> None:
    docs = manifest()
    assert sorted(docs) == sorted([
        ("Secret", "grafana-admin"), ("ConfigMap", "grafana-config"), ("ConfigMap", "grafana-provisioning"),
        *[("ConfigMap", f"grafana-dashboard-{path.stem}") for path in sorted(grafana.DASHBOARDS_DIR.glob("*.json"))],
        ("ServiceAccount", "grafana"), ("Deployment", "grafana"), ("Service", "grafana"),
    ])  # fmt: skip
    assert {doc["metadata"]["namespace"] for doc in docs.values()} == {"monitoring"}
    assert {doc["metadata"]["labels"]["spectra.io/addon-set"] for doc in docs.values()} == {"grafana"}
    service = docs[("Service", "grafana")]["spec"]
    assert service["ports"] == [{"name": "http", "port": 3000, "targetPort": "http"}]


def test_pod_is_restricted_on_the_pinned_upstream_image() -> None:
    docs = manifest()
    spec = pod(docs)["spec"]
    (container,) = spec["containers"]
    assert container["image"].startswith("docker.io/grafana/grafana:12.")
    assert "@sha256:" in container["image"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 472, "runAsGroup": 472, "fsGroup": 472,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert spec["automountServiceAccountToken"] is False
    assert docs[("ServiceAccount", "grafana")]["automountServiceAccountToken"] is False
    assert set(container["resources"]) == {"requests", "limits"}
    # the writable places of a read-only root: emptyDirs
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    found = mounts(docs)
    for path in ("/var/lib/grafana", "/tmp"):
        assert "emptyDir" in volumes[found[path]], path
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)


def test_namespace_is_restricted_with_grafana_on() -> None:
    assert cluster_addons.namespaces([grafana.ADDON], {"grafana_enabled": True}) == {"monitoring": "restricted"}
    assert cluster_addons.namespaces([grafana.ADDON], {"grafana_enabled": False}) == {}


def test_prometheus_is_the_datasource() -> None:
    data = manifest(prometheus_scrape_interval="30s")[("ConfigMap", "grafana-provisioning")]["data"]
    (source,) = yaml.safe_load(data["datasources.yaml"])["datasources"]
    assert source["url"] == "http://prometheus.monitoring.svc:9090"
    assert source["uid"] == "prometheus" and source["type"] == "prometheus" and source["isDefault"] is True
    assert source["jsonData"]["timeInterval"] == "30s"  # what $__rate_interval is made of


def test_every_dashboard_file_is_provisioned() -> None:
    docs = manifest()
    data = docs[("ConfigMap", "grafana-provisioning")]["data"]
    (provider,) = yaml.safe_load(data["dashboards.yaml"])["providers"]
    assert provider["options"]["path"] == grafana.DASHBOARDS_MOUNT
    assert provider["allowUiUpdates"] is False
    assert mounts(docs)[grafana.DASHBOARDS_MOUNT] == "dashboards"
    (projected,) = [v for v in pod(docs)["spec"]["volumes"] if v["name"] == "dashboards"]
    names = [source["configMap"]["name"] for source in projected["projected"]["sources"]]
    for path in sorted(grafana.DASHBOARDS_DIR.glob("*.json")):
        name = f"grafana-dashboard-{path.stem}"
        assert name in names
        ((key, text),) = docs[("ConfigMap", name)]["data"].items()
        assert key == path.name and json.loads(text) == json.loads(path.read_text())
    assert (grafana.DASHBOARDS_DIR / grafana.HOME_DASHBOARD).exists()


def test_grafana_ini_closes_sign_up_anonymous_access_and_calls_home() -> None:
    docs = manifest(grafana_admin_user="ops")
    ini = docs[("ConfigMap", "grafana-config")]["data"]["grafana.ini"]
    for line in (
        "admin_user = ops", "admin_password = $__file{/etc/grafana/secrets/admin-password}",
        "allow_sign_up = false", "[auth.anonymous]\nenabled = false", "reporting_enabled = false",
        "check_for_updates = false", "preinstall_disabled = true", "mode = console",
    ):  # fmt: skip
        assert line in ini, line
    assert mounts(docs)["/etc/grafana/grafana.ini"] == "config"
    assert docs[("Secret", "grafana-admin")]["stringData"] == {"admin-password": "correct-horse"}
    assert "correct-horse" not in json.dumps(pod(docs))  # only in the Secret


def test_password_or_config_change_restarts_the_pod() -> None:
    def checksum(**data: Any) -> str:
        return str(grafana.context(settings(**data))["checksum"])

    assert pod(manifest())["metadata"]["annotations"]["spectra.io/config-sha256"] == checksum(
        grafana_admin_password="correct-horse"
    )
    assert checksum() == checksum()
    assert checksum() != checksum(grafana_admin_password="another-one-again")
    assert checksum() != checksum(grafana_admin_user="ops")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grafana_admin_password": "short"}, "grafana_admin_password: at least 12 characters"),
        ({"grafana_admin_password": "  "}, "grafana_admin_password: at least 12"),
        ({"grafana_admin_password": "admin"}, "grafana_admin_password: not Grafana's well-known default"),
        ({"grafana_admin_user": "a b"}, "grafana_admin_user='a b'"),
        ({"grafana_memory_limit": "lots"}, "grafana_memory_limit='lots'"),
        ({"grafana_image": "Grafana Latest"}, "grafana_image="),
        ({"prometheus_enabled": False}, "set prometheus_enabled too"),
        ({"grafana_extra_dashboards_dir": "/no/such/dir"}, "grafana_extra_dashboards_dir='/no/such/dir': not a dir"),
    ],
)
def test_bad_settings_stop_before_anything(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match="invalid settings") as raised:
        run_component(grafana.COMPONENT, facts={}, data={**CP, **data})
    assert message in str(raised.value)


def test_switched_off_nothing_is_required_or_read() -> None:
    off = {**CP, "grafana_enabled": False, "grafana_admin_password": None}
    assert run_component(grafana.COMPONENT, facts={}, data=off).ops == []
    assert grafana.COMPONENT.problems({**grafana.DEFAULTS, "grafana_enabled": False}) == []


def settings(**data: Any) -> dict[str, Any]:
    return {**grafana.DEFAULTS, "prometheus_enabled": True, "grafana_admin_password": "pw-long-enough", **data}


def extra_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "dashboards"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def good_dashboard(uid: str) -> str:
    panel = {"id": 1, "type": "stat", "title": "Up", "datasource": {"type": "prometheus", "uid": "prometheus"},
             "targets": [{"refId": "A", "expr": "up"}]}  # fmt: skip
    return json.dumps({"uid": uid, "title": "Team", "panels": [panel]})


def test_the_repository_dashboards_pass_the_check() -> None:
    assert grafana.check(settings()) == []


def test_a_bad_dashboard_file_stops_validate_and_the_deploy_naming_it(tmp_path: Path) -> None:
    directory = extra_dir(tmp_path, {"team.json": '{"uid": "team", "panels": [', "other.json": good_dashboard("o")})
    bad = directory / "team.json"
    # what `spectra validate` and the deploy's prepare run
    (problem,) = grafana.COMPONENT.problems(settings(grafana_extra_dashboards_dir=str(directory)))
    assert problem.startswith(f"{bad}: not JSON")
    with pytest.raises(DeployError, match=f"{bad}: not JSON"):
        run_component(grafana.COMPONENT, facts={}, data={**CP, "grafana_extra_dashboards_dir": str(directory)})


def test_a_bad_file_in_the_repository_is_caught_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(grafana.DASHBOARDS_DIR, copy)
    (copy / "etcd.json").write_text((copy / "etcd.json").read_text()[:-10])
    monkeypatch.setattr(grafana, "DASHBOARDS_DIR", copy)
    (problem,) = grafana.check(settings())
    assert problem.startswith(f"{copy / 'etcd.json'}: not JSON")


def test_extra_dashboards_are_provisioned(tmp_path: Path) -> None:
    directory = extra_dir(tmp_path, {"team-a.json": good_dashboard("team-a")})
    docs = manifest(grafana_extra_dashboards_dir=str(directory))
    data = docs[("ConfigMap", "grafana-dashboard-team-a")]["data"]
    assert json.loads(data["team-a.json"]) == json.loads(good_dashboard("team-a"))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"etcd.json": good_dashboard("x")}, "same name as"),
        ({"team.json": good_dashboard("spectra-etcd")}, "uid 'spectra-etcd' is also"),
        ({"Team_A.json": good_dashboard("x")}, "must be a DNS label"),
        (
            {"team.json": json.dumps({"uid": "t", "title": "T", "panels": [{"type": "graph", "title": "G"}]})},
            "panel 'G': datasource None",
        ),
    ],
)
def test_extra_dashboards_are_checked_with_the_repository_ones(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    directory = extra_dir(tmp_path, files)
    problems = grafana.check(settings(grafana_extra_dashboards_dir=str(directory)))
    assert any(message in problem and str(directory) in problem for problem in problems), problems


def test_password_derived_from_the_cluster_ca_when_not_set(tmp_path: Any) -> None:
    from facts.addons import AddonSets
    from tests.unit.pyinfra_harness import run_component

    data = {**CP, "grafana_admin_password": None, "pki_dir": str(tmp_path / "pki")}

    def pushed() -> str:
        result = run_component(grafana.COMPONENT, facts={AddonSets: {}}, data=data)
        manifest = result.uploads["/etc/kubernetes/addons/grafana.yaml.spectra-new"]
        secrets = [
            d
            for d in yaml.safe_load_all(manifest)
            if d["kind"] == "Secret" and d["metadata"]["name"] == "grafana-admin"
        ]
        return str(secrets[0]["stringData"]["admin-password"])

    first = pushed()
    assert len(first) >= 40 and first == pushed()  # stable: a re-push changes nothing
