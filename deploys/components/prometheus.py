"""Prometheus in the ``monitoring`` namespace: scrapes every node exporter, kubelet and cAdvisor, the apiservers,
etcd, controller-managers, schedulers, CoreDNS and itself; evaluates the alert rules; keeps its TSDB on a
node-local volume on the monitoring host.

* Targets come from their owners: node exporters are every inventory host (``spectra.topology`` addresses,
  the port from ``node_exporter.listen_port``), apiservers, etcd members, controller-managers and schedulers
  the control-plane and etcd hosts with their cluster-setting ports; kubelets and cAdvisor come from the
  Kubernetes node list, CoreDNS from its pods.
* TLS everywhere it is offered: kubelets and apiservers verified against the cluster CA (the ServiceAccount's
  ``ca.crt``), with the ServiceAccount token and least-privilege RBAC (``nodes/metrics``, ``/metrics``);
  etcd with its own client certificate from the etcd CA (``etcd/monitoring-client``, in a Secret). The
  controller-manager and scheduler serve self-signed certificates (no serving certificate is issued to them):
  those two scrapes skip verification, still with the token (``control_plane_metrics_bind`` exposes them).
* Placement: ``prometheus_node`` (default: the first host with the ``monitoring`` role that runs kubelet);
  its TSDB is the ``local_storage`` volume there, so the firewall's monitoring set (the monitoring hosts'
  addresses) is exactly where its scrapes come from.
* Rules: ``templates/addons/prometheus/rules/*.yaml`` (checked by ``promtool`` in the tests), in a ConfigMap.
  A changed configuration or rule file changes the pod template's checksum annotation: the pod restarts,
  nothing else does.
* Image: upstream's ``quay.io/prometheus/prometheus`` at a pinned tag; the lab builds that reference from the
  Go module (``lab/images/prometheus.py``, Kubernetes service discovery only, no web UI: the API is what is used).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pyinfra import host

from deploys import addon
from deploys.components import node_exporter
from deploys.templating import TEMPLATES_DIR
from spectra import topology, values

NAMESPACE = "monitoring"
CLAIM = "data-prometheus-0"  # the StatefulSet's claim of its one replica
TEMPLATES = tuple(f"addons/prometheus/{name}" for name in ("rbac.yaml.j2", "config.yaml.j2", "prometheus.yaml.j2"))
RULES_DIR = TEMPLATES_DIR / "addons" / "prometheus" / "rules"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ETCD_CERT_DIR = "/etc/prometheus/etcd"
ALERTMANAGER = "alertmanager.monitoring.svc:9093"  # the alertmanager addon's Service
METRICS_SERVER = "metrics-server.kube-system.svc:443"  # the metrics-server addon's Service

DEFAULTS: dict[str, Any] = {
    "prometheus_enabled": True,  # the Prometheus addon
    "prometheus_image": "quay.io/prometheus/prometheus:v3.16.0",  # upstream image, pinned
    "prometheus_node": None,  # node of its volume and pod; None: first monitoring host that runs kubelet
    "prometheus_retention_time": "15d",  # TSDB retention by age (Prometheus duration)
    "prometheus_retention_size": "8GB",  # and by size (Prometheus units: MB, GB, TB); keep below the volume
    "prometheus_storage_size": "10Gi",  # the node-local volume's capacity
    "prometheus_scrape_interval": "15s",  # also the rule evaluation interval
    "prometheus_cpu_request": "200m",
    "prometheus_memory_request": "512Mi",
    "prometheus_cpu_limit": "1",
    "prometheus_memory_limit": "2Gi",
    "prometheus_external_labels": {},  # more labels on every series and alert sent out (cluster is set)
    # more scrape jobs: [{"job_name": "x", "targets": ["host:port", ...], "scheme": "http", "metrics_path": ...}]
    "prometheus_extra_scrape_configs": [],
}

_SIZE = re.compile(r"^[0-9]+(B|KB|MB|GB|TB|PB|EB)$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TARGET = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
RESOURCE_KEYS = (
    "prometheus_cpu_request",
    "prometheus_memory_request",
    "prometheus_cpu_limit",
    "prometheus_memory_limit",
)
EXTRA_JOB_KEYS = {"job_name", "targets", "scheme", "metrics_path", "scrape_interval", "labels"}


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []

    def expect(ok: bool, key: str, expected: str, value: Any = None) -> None:
        if not ok:
            problems.append(f"{key}={settings[key] if value is None else value!r}: {expected}")

    expect(
        bool(values.IMAGE_REFERENCE.match(str(settings["prometheus_image"]))), "prometheus_image", "an image reference"
    )
    for key in ("prometheus_retention_time", "prometheus_scrape_interval"):
        expect(
            bool(values.PROMETHEUS_DURATION.match(str(settings[key]))),
            key,
            "a Prometheus duration such as 15d or 30s (not negative)",
        )
    expect(bool(_SIZE.match(str(settings["prometheus_retention_size"]))), "prometheus_retention_size",
           "a size such as 8GB (units B, KB, MB, GB, TB)")  # fmt: skip
    for key in ("prometheus_storage_size", *RESOURCE_KEYS):
        expect(bool(values.QUANTITY.match(str(settings[key]))), key, "a Kubernetes quantity such as 10Gi, 200m or 1")
    labels = settings["prometheus_external_labels"]
    expect(isinstance(labels, dict) and all(_LABEL.match(str(k)) for k in labels), "prometheus_external_labels",
           "a mapping of label names ([a-zA-Z_][a-zA-Z0-9_]*) to values")  # fmt: skip
    jobs = settings["prometheus_extra_scrape_configs"]
    if not isinstance(jobs, list):
        expect(False, "prometheus_extra_scrape_configs", "a list of jobs")
        jobs = []
    for index, job in enumerate(jobs):
        key = f"prometheus_extra_scrape_configs[{index}]"
        if not isinstance(job, dict) or not _LABEL.match(str(job.get("job_name", ""))):
            problems.append(f"{key}: a mapping with a job_name ([a-zA-Z_][a-zA-Z0-9_]*)")
            continue
        unknown = sorted(set(job) - EXTRA_JOB_KEYS)
        if unknown:
            problems.append(f"{key} ({job['job_name']}): unknown keys {unknown}; known: {sorted(EXTRA_JOB_KEYS)}")
        targets = job.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{key} ({job['job_name']}): targets, a non-empty list of host:port")
        for target in targets if isinstance(targets, list) else []:
            if not _TARGET.match(str(target)):
                problems.append(f"{key} ({job['job_name']}): target {target!r} names no port (host:port)")
    return problems


def prometheus_node(settings: Mapping[str, Any]) -> str:
    """Where Prometheus and its volume go: ``prometheus_node``, else the first monitoring host running kubelet."""
    return addon.data_node(settings, "prometheus_node", "Prometheus")


def volumes(settings: Mapping[str, Any]) -> list[addon.LocalVolume]:
    # 65534 is nobody:nogroup on Debian, the user upstream's image runs as
    return [addon.LocalVolume(prometheus_node(settings), NAMESPACE, CLAIM, str(settings["prometheus_storage_size"]),
                              user="nobody", group="nogroup")]  # fmt: skip


def _static(targets: list[tuple[str, str, dict[str, str]]]) -> list[dict[str, Any]]:
    return [{"targets": [target], "labels": {"node": name, **labels}} for name, target, labels in targets]


def _hosts_with_port(members: list[Any], port: int, why: str) -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for member in topology.by_name(members):
        address = topology.require_address(member, why)
        labels = {"zone": str(member.data.get("zone"))} if member.data.get("zone") else {}
        found.append((str(member.name), f"{topology.url_host(address)}:{port}", labels))
    return found


def application_jobs(services: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One job per application Service with a ``metrics_port`` (``application_services``, the network policies'
    owner of what applications are): its pods, found by their labels, on that container port. Job name
    ``<namespace>/<name>``."""
    jobs = []
    for reference, service in sorted(services.items()):
        if not isinstance(service, Mapping) or not service.get("metrics_port"):
            continue
        namespace, _, name = str(reference).partition("/")
        keep = [
            {"source_labels": [f"__meta_kubernetes_pod_label_{re.sub('[^a-zA-Z0-9_]', '_', key)}"],
             "regex": re.escape(str(value)), "action": "keep"}
            for key, value in sorted(service["selector"].items())
        ]  # fmt: skip
        port = {"source_labels": ["__meta_kubernetes_pod_container_port_number"], "action": "keep",
                "regex": str(service["ports"][service["metrics_port"]])}  # fmt: skip
        jobs.append({
            "job_name": f"{namespace}/{name}",
            "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
            "relabel_configs": [
                *keep,
                port,
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            ],
        })  # fmt: skip
    return jobs


def scrape_configs(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every scrape job (the job names are those the alert rules use)."""
    inventory = list(host.state.inventory)
    control_planes = topology.control_planes(inventory)
    sa_tls = {"ca_file": f"{SA_DIR}/ca.crt"}
    token = {"authorization": {"credentials_file": f"{SA_DIR}/token"}}
    jobs: list[dict[str, Any]] = [{"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}]
    exporter_port = node_exporter.listen_port(settings)
    if exporter_port is not None:
        targets = _hosts_with_port(inventory, exporter_port, "the node exporter scrape targets")
        jobs.append({"job_name": "node-exporter", "static_configs": _static(targets)})
    node_name = [{"source_labels": ["__meta_kubernetes_node_name"], "target_label": "node"}]
    for job, path in (("kubelet", "/metrics"), ("cadvisor", "/metrics/cadvisor")):
        jobs.append({
            "job_name": job, "scheme": "https", "metrics_path": path, "tls_config": sa_tls, **token,
            "kubernetes_sd_configs": [{"role": "node"}], "relabel_configs": node_name,
        })  # fmt: skip
    apiservers = _hosts_with_port(control_planes, int(settings["apiserver_port"]), "the apiserver scrape targets")
    jobs.append({"job_name": "apiserver", "scheme": "https", "tls_config": sa_tls, **token,
                 "static_configs": _static(apiservers)})  # fmt: skip
    etcd_hosts = topology.with_role(inventory, topology.ETCD) or control_planes
    etcd = _hosts_with_port(etcd_hosts, int(settings["etcd_client_port"]), "the etcd scrape targets")
    etcd_tls = {"ca_file": f"{ETCD_CERT_DIR}/ca.crt", "cert_file": f"{ETCD_CERT_DIR}/tls.crt",
                "key_file": f"{ETCD_CERT_DIR}/tls.key"}  # fmt: skip
    jobs.append({"job_name": "etcd", "scheme": "https", "tls_config": etcd_tls, "static_configs": _static(etcd)})
    from deploys.components import control_plane_flags

    if control_plane_flags.metrics_exposed(settings):
        for job, key in (("kube-controller-manager", "controller_manager_port"), ("kube-scheduler", "scheduler_port")):
            targets = _hosts_with_port(control_planes, int(settings[key]), f"the {job} scrape targets")
            # self-signed serving certificates (see the module's docstring): the token still authenticates
            jobs.append({"job_name": job, "scheme": "https", "tls_config": {"insecure_skip_verify": True}, **token,
                         "static_configs": _static(targets)})  # fmt: skip
    jobs.append({
        "job_name": "coredns",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": ["kube-system"]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_label_k8s_app"], "regex": "kube-dns", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_number"], "regex": "9153", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ],
    })  # fmt: skip
    jobs += application_jobs(settings.get("application_services") or {})
    if settings.get("alertmanager_enabled"):
        jobs.append({"job_name": "alertmanager", "static_configs": [{"targets": [ALERTMANAGER]}]})
    if settings.get("gateway_enabled"):
        from deploys.components import gateway

        # Traefik on the host network of each edge host: its admin entry point
        edges = _hosts_with_port(gateway.edge_hosts(inventory), int(settings["gateway_admin_port"]),
                                 "the gateway scrape targets")  # fmt: skip
        jobs.append({"job_name": "gateway", "static_configs": _static(edges)})
    if settings.get("metrics_server_enabled"):
        # its serving certificate is the cluster PKI's, for the Service's name
        jobs.append({"job_name": "metrics-server", "scheme": "https", "tls_config": sa_tls, **token,
                     "static_configs": [{"targets": [METRICS_SERVER]}]})  # fmt: skip
    for extra in settings["prometheus_extra_scrape_configs"] or []:
        plain = {key: value for key, value in extra.items() if key not in ("targets", "labels")}
        jobs.append(
            {**plain, "static_configs": [{"targets": list(extra["targets"]), "labels": extra.get("labels", {})}]}
        )
    return jobs


def rule_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(RULES_DIR.glob("*.yaml"))}


def config(settings: Mapping[str, Any]) -> dict[str, Any]:
    interval = str(settings["prometheus_scrape_interval"])
    alerting: dict[str, Any] = {}
    if settings.get("alertmanager_enabled"):  # a plain dict without the key (tests): no Alertmanager
        alerting = {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER]}]}]}
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"cluster": str(settings["cluster_name"]), **settings["prometheus_external_labels"]},
        },
        "rule_files": ["/etc/prometheus/rules/*.yaml"],
        **({"alerting": alerting} if alerting else {}),
        "scrape_configs": scrape_configs(settings),
    }


def etcd_client() -> dict[str, str]:
    """The etcd CA and Prometheus' etcd client certificate and key (PEM), from the cluster PKI."""
    from deploys.components import pki

    bundle = pki.cluster_pki(*pki.cluster_spec(list(host.state.inventory)))
    return {
        "ca.crt": bundle.cert("etcd/ca").decode(),
        "tls.crt": bundle.cert("etcd/monitoring-client").decode(),
        "tls.key": bundle.key("etcd/monitoring-client").decode(),
    }


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    prometheus_node(settings)  # refuses a cluster without a place for the data, before anything is applied
    prometheus_yml = yaml.safe_dump(config(settings), sort_keys=False)
    rules = rule_files()
    etcd = etcd_client()
    checksum = hashlib.sha256(json.dumps([prometheus_yml, rules, etcd], sort_keys=True).encode()).hexdigest()
    return {
        "namespace": NAMESPACE,
        "image": settings["prometheus_image"],
        "prometheus_yml": prometheus_yml,
        "rules": rules,
        "etcd": etcd,
        "checksum": checksum,
        "claim": CLAIM.removesuffix("-prometheus-0"),
        "storage_class": settings["local_storage_class"],
        "storage_size": settings["prometheus_storage_size"],
        "retention_time": settings["prometheus_retention_time"],
        "retention_size": settings["prometheus_retention_size"],
        "resources": {key.removeprefix("prometheus_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name="prometheus",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=NAMESPACE,
    checks=(check,),
    volumes=volumes,
)
COMPONENT = addon.addon_component(ADDON)
