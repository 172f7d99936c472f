"""The log pipeline's manifests and host part for a three-host inventory: the VictoriaLogs store (restricted,
node-local volume on the monitoring host, retention from settings), vlagent on every node (privileged
namespace for its hostPaths only, buffer and offsets on the node), the journal upload to it, and bad settings
refused by key before anything runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from pyinfra.api import DeployError
from pyinfra.facts.deb import DebPackages

from deploys import addon
from deploys.components import (
    cluster_addons,
    journal_upload,
    local_storage,
    local_volume_dirs,
    victorialogs,
    victorialogs_agent,
)
from facts.addons import AddonSets
from facts.config_state import ConfigState
from facts.files import FileStates
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

CP = {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11", "zone": "a"}
OTHERS = {
    "node2": {"roles": ["workers", "monitoring"], "ssh_hostname": "10.0.0.12", "zone": "b"},
    "node3": {"roles": ["workers"], "ssh_hostname": "10.0.0.13", "zone": "c"},
}
Docs = dict[tuple[str, str], dict[str, Any]]


def manifest(component: Any, set_name: str, **data: Any) -> Docs:
    others = {name: {**values, **data} for name, values in OTHERS.items()}  # cluster-wide keys agree
    result = run_component(component, facts={AddonSets: {}}, data={**CP, **data}, others=others)
    uploaded = result.uploads[f"/etc/kubernetes/addons/{set_name}.yaml.spectra-new"]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(uploaded)}


def store(**data: Any) -> Docs:
    return manifest(victorialogs.COMPONENT, "victorialogs", **data)


def agent(**data: Any) -> Docs:
    return manifest(victorialogs_agent.COMPONENT, "victorialogs-agent", **data)


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "spectra", "spectra.io/addon-set": name}


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}  # fmt: skip


# --- the store ---------------------------------------------------------------------------------------------


def test_store_manifest_for_the_defaults() -> None:
    docs = store()
    assert list(docs) == [("StatefulSet", "victorialogs"), ("Service", "victorialogs")]
    statefulset = docs[("StatefulSet", "victorialogs")]
    assert statefulset["metadata"] == {"name": "victorialogs", "namespace": "logging", "labels": labels("victorialogs")}
    pod = statefulset["spec"]["template"]["spec"]
    assert pod == {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "victorialogs",
            "image": "docker.io/victoriametrics/victoria-logs:v1.52.1",
            "args": [
                "-storageDataPath=/victoria-logs-data",
                "-retentionPeriod=7d",
                "-retention.maxDiskSpaceUsageBytes=8GiB",
                "-httpListenAddr=:9428",
                "-loggerFormat=json",
            ],
            "ports": [{"name": "http", "containerPort": 9428}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 15,
                              "failureThreshold": 8},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": RESTRICTED_CONTAINER,
            "volumeMounts": [{"name": "data", "mountPath": "/victoria-logs-data"}],
        }],
    }  # fmt: skip
    assert statefulset["spec"]["volumeClaimTemplates"] == [{
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "spectra-local",
                 "resources": {"requests": {"storage": "10Gi"}}},
    }]  # fmt: skip
    assert docs[("Service", "victorialogs")]["spec"] == {
        "selector": {"app.kubernetes.io/name": "victorialogs"},
        "ports": [{"name": "http", "port": 9428, "targetPort": "http"}],
    }


def test_retention_and_a_fixed_address_from_settings() -> None:
    docs = store(victorialogs_retention_period="30d", victorialogs_retention_max_disk="40GiB",
                 victorialogs_storage_size="50Gi", victorialogs_cluster_ip="10.96.0.13")  # fmt: skip
    (container,) = docs[("StatefulSet", "victorialogs")]["spec"]["template"]["spec"]["containers"]
    assert container["args"][1:3] == ["-retentionPeriod=30d", "-retention.maxDiskSpaceUsageBytes=40GiB"]
    assert docs[("Service", "victorialogs")]["spec"]["clusterIP"] == "10.96.0.13"


def test_store_volume_on_the_monitoring_host() -> None:
    result = run_component(local_storage.COMPONENT, facts={AddonSets: {}}, data=CP, others=OTHERS)
    docs = yaml.safe_load_all(result.uploads["/etc/kubernetes/addons/local-storage.yaml.spectra-new"])
    (volume,) = [doc for doc in docs if doc["metadata"]["name"] == "spectra-logging-data-victorialogs-0"]
    assert volume["spec"]["claimRef"] == {"namespace": "logging", "name": "data-victorialogs-0"}
    assert volume["spec"]["capacity"] == {"storage": "10Gi"}
    assert volume["spec"]["local"] == {"path": "/var/lib/spectra/volumes/logging/data-victorialogs-0"}
    term = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["node2"]
    others = {"node1": CP, "node3": OTHERS["node3"]}
    made = run_component(local_volume_dirs.COMPONENT, facts={FileStates: lambda paths, **_: dict.fromkeys(paths)},
                         data=OTHERS["node2"], others=others)  # fmt: skip
    assert made.op("Volume logging/data-victorialogs-0").commands == [
        "mkdir -p /var/lib/spectra/volumes/logging/data-victorialogs-0",
        "chown nobody:nogroup /var/lib/spectra/volumes/logging/data-victorialogs-0",  # the uid the pod runs as
        "chmod 2770 /var/lib/spectra/volumes/logging/data-victorialogs-0",
    ]


def test_store_node_can_be_chosen_and_must_exist() -> None:
    # the PV's node is where the scheduler puts the pod
    chosen = {name: {**values, "victorialogs_node": "node3"} for name, values in OTHERS.items()}
    data = {**CP, "victorialogs_node": "node3"}
    result = run_component(local_storage.COMPONENT, facts={AddonSets: {}}, data=data, others=chosen)
    docs = yaml.safe_load_all(result.uploads["/etc/kubernetes/addons/local-storage.yaml.spectra-new"])
    (pv,) = [doc for doc in docs if doc["metadata"]["name"] == "spectra-logging-data-victorialogs-0"]
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["node3"]
    with pytest.raises(DeployError, match="victorialogs_node='nodeX': not an inventory host that runs kubelet"):
        store(victorialogs_node="nodeX")


def test_no_monitoring_host_is_a_clear_error() -> None:
    others = {**OTHERS, "node2": {**OTHERS["node2"], "roles": ["workers"]}}
    with pytest.raises(DeployError, match="VictoriaLogs needs a node for its data"):
        run_component(victorialogs.COMPONENT, facts={AddonSets: {}}, data=CP, others=others)


# --- the collector -----------------------------------------------------------------------------------------


def test_agent_manifest_for_the_defaults() -> None:
    docs = agent()
    assert list(docs) == [
        ("ServiceAccount", "vlagent"), ("ClusterRole", "spectra:vlagent"), ("ClusterRoleBinding", "spectra:vlagent"),
        ("DaemonSet", "vlagent"), ("Service", "vlagent"),
    ]  # fmt: skip
    daemonset = docs[("DaemonSet", "vlagent")]
    assert daemonset["metadata"]["namespace"] == "logging-agents"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["tolerations"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["securityContext"] == {"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/victoriametrics/vlagent:v1.52.1"
    assert container["args"] == [
        "-kubernetesCollector",
        "-kubernetesCollector.includeNodeLabels",
        "-tmpDataPath=/var/lib/vlagent",
        "-remoteWrite.url=http://victorialogs.logging.svc.cluster.local:9428/insert/native",
        "-remoteWrite.maxDiskUsagePerURL=1GB",
        "-remoteWrite.retryMaxTime=5s",
        "-remoteWrite.flushInterval=1s",
        "-httpListenAddr=:9429",
        "-loggerFormat=json",
    ]
    # nothing beyond the hostPaths: no privileged container, no host namespaces, no capability
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert container["volumeMounts"] == [
        {"name": "containers", "mountPath": "/var/log/containers", "readOnly": True},
        {"name": "pods", "mountPath": "/var/log/pods", "readOnly": True},
        {"name": "data", "mountPath": "/var/lib/vlagent"},
    ]
    assert pod["volumes"] == [
        {"name": "containers", "hostPath": {"path": "/var/log/containers", "type": "Directory"}},
        {"name": "pods", "hostPath": {"path": "/var/log/pods", "type": "Directory"}},
        {"name": "data", "hostPath": {"path": "/var/lib/vlagent", "type": "DirectoryOrCreate"}},
    ]
    assert docs[("Service", "vlagent")]["spec"] == {
        "clusterIP": "10.96.0.12",
        "internalTrafficPolicy": "Local",  # each host's journal to the vlagent on its own node
        "selector": {"app.kubernetes.io/name": "vlagent"},
        "ports": [{"name": "http", "port": 9429, "targetPort": "http"}],
    }


def test_agent_rbac_reads_only_what_vlagent_asks_for() -> None:
    role = agent()[("ClusterRole", "spectra:vlagent")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
    ]


def test_agent_settings_reach_its_arguments() -> None:
    docs = agent(victorialogs_agent_data_dir="/srv/vlagent/", victorialogs_agent_max_buffer="2GB",
                 victorialogs_agent_retry_max_delay="10s", victorialogs_agent_flush_interval="500ms",
                 victorialogs_agent_remote_write_url="https://logs.example:9428/insert/native",
                 victorialogs_agent_tolerations=[{"operator": "Exists"}], victorialogs_agent_service_ip="10.96.0.20",
                 cluster_domain="corp.internal")  # fmt: skip
    pod = docs[("DaemonSet", "vlagent")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][2:7] == [
        "-tmpDataPath=/srv/vlagent",
        "-remoteWrite.url=https://logs.example:9428/insert/native",
        "-remoteWrite.maxDiskUsagePerURL=2GB",
        "-remoteWrite.retryMaxTime=10s",
        "-remoteWrite.flushInterval=500ms",
    ]
    assert pod["volumes"][2]["hostPath"]["path"] == "/srv/vlagent"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert docs[("Service", "vlagent")]["spec"]["clusterIP"] == "10.96.0.20"
    url = agent(cluster_domain="corp.internal")[("DaemonSet", "vlagent")]["spec"]["template"]["spec"]
    assert (
        "-remoteWrite.url=http://victorialogs.logging.svc.corp.internal:9428/insert/native"
        in url["containers"][0]["args"]
    )


def test_service_ip_follows_the_service_range() -> None:
    docs = agent(cluster_service_cidr="172.20.0.0/16", cluster_dns_ip="172.20.0.10")
    assert docs[("Service", "vlagent")]["spec"]["clusterIP"] == "172.20.0.12"


def test_namespaces_store_restricted_collector_privileged() -> None:
    files = {FileStates: lambda paths, **_: dict.fromkeys(paths), AddonSets: {}}
    result = run_component(cluster_addons.COMPONENT, facts=files, data=CP)
    uploaded = yaml.safe_load_all(result.uploads["/etc/kubernetes/addons/namespaces.yaml.spectra-new"])
    levels = {doc["metadata"]["name"]: doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
              for doc in uploaded}  # fmt: skip
    assert levels["logging"] == "restricted"
    assert levels["logging-agents"] == "privileged"  # baseline forbids hostPath volumes
    settings = {one.switch: True for one in addon.registered()} | {"victorialogs_agent_enabled": False}
    assert "logging-agents" not in cluster_addons.namespaces(addon.registered(), settings)


# --- bad settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"victorialogs_retention_period": "-7d"},
            "victorialogs_retention_period='-7d': a duration of at least one day",
        ),
        (
            {"victorialogs_retention_period": "12h"},
            "victorialogs_retention_period='12h': a duration of at least one day",
        ),
        ({"victorialogs_retention_period": "7"}, "victorialogs_retention_period='7'"),
        ({"victorialogs_retention_max_disk": "-1GiB"}, "victorialogs_retention_max_disk='-1GiB': a size above 0"),
        ({"victorialogs_retention_max_disk": "0"}, "victorialogs_retention_max_disk='0': a size above 0"),
        ({"victorialogs_retention_max_disk": "12GiB"}, "must be below victorialogs_storage_size (10Gi)"),
        ({"victorialogs_storage_size": "lots"}, "victorialogs_storage_size='lots': a Kubernetes quantity"),
        ({"victorialogs_memory_limit": "1 GB"}, "victorialogs_memory_limit='1 GB': a Kubernetes quantity"),
        ({"victorialogs_image": "Victoria Logs"}, "victorialogs_image='Victoria Logs': an image reference"),
        ({"victorialogs_cluster_ip": "10.200.0.5"}, "victorialogs_cluster_ip='10.200.0.5': must be inside"),
        ({"victorialogs_cluster_ip": "10.96.0.10"}, "victorialogs_cluster_ip='10.96.0.10': already cluster_dns_ip"),
    ],
)
def test_bad_store_settings_stop_before_anything(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        run_component(victorialogs.COMPONENT, facts={}, data={**CP, **data}, others=OTHERS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"victorialogs_enabled": False}, "victorialogs_agent_remote_write_url: required when victorialogs_enabled"),
        ({"victorialogs_agent_remote_write_url": "logs:9428"}, "victorialogs_agent_remote_write_url='logs:9428'"),
        ({"victorialogs_agent_max_buffer": "0"}, "victorialogs_agent_max_buffer='0': a size above 0"),
        ({"victorialogs_agent_retry_max_delay": "0s"}, "victorialogs_agent_retry_max_delay='0s': a duration above 0"),
        ({"victorialogs_agent_flush_interval": "-1s"}, "victorialogs_agent_flush_interval='-1s'"),
        ({"victorialogs_agent_data_dir": "var/lib/vlagent"}, "victorialogs_agent_data_dir='var/lib/vlagent'"),
        ({"victorialogs_agent_tolerations": [{"taint": "x"}]}, "victorialogs_agent_tolerations=[{'taint': 'x'}]"),
        ({"victorialogs_agent_service_ip": "10.96.0.10"}, "victorialogs_agent_service_ip='10.96.0.10': already"),
        ({"victorialogs_agent_service_ip": "10.96.0.1"}, "the network address and the first address"),
        (
            {"victorialogs_cluster_ip": "10.96.0.12"},
            "victorialogs_agent_service_ip='10.96.0.12': already victorialogs_",
        ),
        ({"victorialogs_agent_cpu_limit": "half"}, "victorialogs_agent_cpu_limit='half'"),
    ],
)
def test_bad_agent_settings_stop_before_anything(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        run_component(victorialogs_agent.COMPONENT, facts={}, data={**CP, **data}, others=OTHERS)


def test_an_external_store_needs_no_victorialogs() -> None:
    url = "http://logs.example:9428/insert/native"
    docs = agent(victorialogs_enabled=False, victorialogs_agent_remote_write_url=url)
    assert (
        f"-remoteWrite.url={url}" in docs[("DaemonSet", "vlagent")]["spec"]["template"]["spec"]["containers"][0]["args"]
    )


# --- the journal upload ------------------------------------------------------------------------------------

UPLOAD_FACTS: dict[Any, Any] = {DebPackages: {}, ConfigState: {"files": {}, "units": {}}}


def upload(data: dict[str, Any], others: dict[str, Any] | None = None) -> Any:
    return run_component(
        journal_upload.COMPONENT, facts=UPLOAD_FACTS, data=data, others=OTHERS if others is None else others
    )


def test_journal_upload_to_this_nodes_vlagent_with_node_and_zone() -> None:
    result = upload(CP)
    config = result.uploads["/etc/systemd/journal-upload.conf.d/.spectra.conf.spectra-new"]
    (url,) = [line.removeprefix("URL=") for line in config.splitlines() if line.startswith("URL=")]
    assert url == (
        "http://10.96.0.12:9429/insert/journald/upload?extra_fields="
        "kubernetes.node_labels.kubernetes.io%2Fhostname%3Dtesthost,"
        "kubernetes.node_labels.topology.kubernetes.io%2Fzone%3Da&_="
    )
    # what VictoriaLogs reads once journal-upload has appended "/upload" to it
    sent = urlparse(url + "/upload")
    assert sent.path == "/insert/journald/upload"
    assert parse_qs(sent.query)["extra_fields"] == [
        "kubernetes.node_labels.kubernetes.io/hostname=testhost,kubernetes.node_labels.topology.kubernetes.io/zone=a"
    ]
    dropin = result.uploads["/etc/systemd/system/systemd-journal-upload.service.d/.spectra.conf.spectra-new"]
    assert "StartLimitIntervalSec=0" in dropin and "Restart=always" in dropin
    commands = result.commands
    install = next(i for i, c in enumerate(commands) if "install --no-install-recommends systemd-journal-remote" in c)
    move = commands.index("mv -f /etc/systemd/journal-upload.conf.d/.spectra.conf.spectra-new "
                          "/etc/systemd/journal-upload.conf.d/spectra.conf")  # fmt: skip
    assert install < move < commands.index("systemctl daemon-reload")
    assert commands[-2:] == ["systemctl enable systemd-journal-upload.service",
                             "systemctl start systemd-journal-upload.service"]  # fmt: skip


def test_journal_upload_without_zone_and_to_an_explicit_url() -> None:
    result = upload({**CP, "zone": None, "journal_upload_url": "https://logs.example:9428/insert/journald/"})
    config = result.uploads["/etc/systemd/journal-upload.conf.d/.spectra.conf.spectra-new"]
    assert ("URL=https://logs.example:9428/insert/journald/upload?extra_fields="
            "kubernetes.node_labels.kubernetes.io%2Fhostname%3Dtesthost&_=") in config.splitlines()  # fmt: skip


def test_journal_upload_only_where_a_vlagent_runs() -> None:
    etcd_only = {"roles": ["etcd"], "ssh_hostname": "10.0.0.14"}
    assert upload(etcd_only, {"node1": CP, **OTHERS}).ops == []  # no kubelet: no local vlagent
    assert upload({**CP, "victorialogs_agent_enabled": False}).ops == []
    assert upload({**CP, "journal_upload_enabled": False}).ops == []
    assert upload({**etcd_only, "journal_upload_url": "http://logs.example:9428/insert/journald"},
                  {"node1": CP, **OTHERS}).ops != []  # fmt: skip


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"journal_upload_url": "http://logs.example/insert/journald"}, "journal_upload_url='http://logs.example/"),
        ({"journal_upload_url": "http://l:9428/insert/journald?x=1"}, "an http(s) URL with a port and no query"),
        ({"zone": "eu west"}, "zone='eu west': letters, digits"),
    ],
)
def test_bad_journal_upload_settings(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        run_component(journal_upload.COMPONENT, facts={}, data={**CP, **data}, others=OTHERS)


def test_lab_image_references_are_the_pinned_ones() -> None:
    from lab.images import victorialogs as images

    for built, key in ((images.STORE, "victorialogs_image"), (images.AGENT, "victorialogs_agent_image")):
        owner = victorialogs if key == "victorialogs_image" else victorialogs_agent
        assert built.reference == owner.DEFAULTS[key]
    assert (images.STORE.package, images.STORE.entrypoint) == ("app/victoria-logs", "/victoria-logs-prod")
    assert (images.AGENT.package, images.AGENT.entrypoint) == ("app/vlagent", "/vlagent-prod")
    assert images.STORE.version == images.AGENT.version == "v1.52.1"


def test_checks_are_pure(tmp_path: Path) -> None:
    from deploys.settings import owners

    defaults = {key: owner.default for key, owner in owners().items()}
    for component in (victorialogs.COMPONENT, victorialogs_agent.COMPONENT, journal_upload.COMPONENT):
        assert component.problems(defaults) == [], component.name
