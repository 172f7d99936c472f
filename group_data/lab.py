"""Settings for the local lab (group `lab`, from inventories/lab.py; its hosts are also in `env_lab`).

The lab changes data only: download base URLs point at the lab's artifact mirror, and the checksum
tables are the sums of the lab's own builds (`python -m lab up` writes them to
$SPECTRA_LAB_DIR/checksums.json). The deploys run the same download-and-verify code as in production.

pyinfra loads every group_data file for every inventory, so this file must also load when there is
no lab (AWS, bare metal): it reads the lab's files only when the inventory has `lab` hosts, and then
insists on them. `__all__` keeps the helper names below out of host data.
"""

import json
import os
from pathlib import Path
from urllib.parse import urlparse

from pyinfra import inventory

from deploys.checksums import load_table

__all__ = [
    "alertmanager_default_receiver",
    "alertmanager_group_interval",
    "alertmanager_group_wait",
    "alertmanager_receivers",
    "chrony_daemon_opts",
    "containerd_restrict_oom_score_adj",
    "kube_proxy_conntrack_max_per_core",
    "kubelet_allow_cgroup_v1",
    "containerd_registry_mirrors",
    "etcd_download_base_url",
    "etcd_sha256",
    "firewall_monitoring_extra_cidrs",
    "fluentd_enabled",
    "grafana_enabled",
    "kubernetes_download_base_url",
    "kubernetes_sha256",
    "node_exporter_download_base_url",
    "node_exporter_sha256",
    "pki_dir",
    "teams",
    "application_services",
    "network_allows",
    "gateway_enabled",
    "gateway_module_proxy",
    "gateway_routes",
]

# Lab nodes share the host's kernel clock: chrony keeps time but must not set the clock (-x).
chrony_daemon_opts = "-F 1 -x"

# Lab nodes are containers on a host without CAP_SYS_RESOURCE: nothing in them may lower an OOM score,
# and runc fails to start a pod sandbox whose oom_score_adj is negative (-998). containerd clamps it.
containerd_restrict_oom_score_adj = True

# The lab machines run cgroup v1 (hybrid); kubelet >= 1.35 refuses v1 unless told (failCgroupV1: false).
kubelet_allow_cgroup_v1 = True

# The conntrack table size is the one shared host kernel's: kube-proxy in a lab node must leave it alone.
kube_proxy_conntrack_max_per_core = 0

# Two teams, three namespaces (tenancy): tests/lab/test_tenancy.py makes real requests as a namespace's CI
# deployer and checks Pod Security, the quota (shop's own pod count) and the default container resources
# (data's own memory limit).
teams = {
    "shop": {
        "namespaces": ["shop-web", "shop-api"],
        "admins": ["group:shop-admins"],
        "developers": ["group:shop-developers"],
        "viewers": ["user:auditor"],
        "quota": {"pods": "10"},
    },
    "data": {
        "namespaces": ["data-etl"],
        "admins": ["user:dana"],
        "limits": {"default": {"memory": "128Mi"}},
    },
}

# The lab's applications (tests/lab/test_network_policies.py runs them): the web pods may call the api; Prometheus
# scrapes the api's metrics; nothing else crosses a namespace (default deny in every team namespace).
application_services = {
    "shop-web/web": {"selector": {"app.kubernetes.io/name": "web"}, "ports": {"http": 8080}},
    "shop-api/api": {"selector": {"app.kubernetes.io/name": "api"}, "ports": {"http": 8080}, "metrics_port": "http"},
    "data-etl/etl": {"selector": {"app.kubernetes.io/name": "etl"}, "ports": {"http": 8080}},
}
network_allows = [{"from": "shop-web/web", "to": "shop-api/api", "ports": ["http"]}]

# The API gateway on the workers (the lab has no edge role): tests/lab/test_gateway.py calls shop's web app
# through it over TLS and counts the 429s above the route's low limit.
gateway_enabled = True
gateway_routes = {
    "shop": {"hostnames": ["shop.lab.spectra.test"], "to": "shop-web/web", "port": "http",
             "rate_limit": {"average": 5, "burst": 10}},
    "api": {"hostnames": ["api.lab.spectra.test"], "to": "shop-api/api", "port": "http"},
}  # fmt: skip

# Fluentd's apt repository cannot be reached from the lab machines: the component is tested by its
# rendered configuration (unit tests) and by its fail-fast check on an unreachable repository (lab test).
fluentd_enabled = False

# Grafana's image cannot be had here (no registry answers; its Go module is AGPL-licensed and not served): its
# manifests are checked by the lab's apiserver with a server-side dry run instead (tests/lab/test_dashboards.py).
grafana_enabled = False

if inventory.get_group("lab", []):
    _lab_dir = Path(os.environ.get("SPECTRA_LAB_DIR", "/var/lib/spectra-lab"))
    _mirror = json.loads((_lab_dir / "inventory.json").read_text())["mirror_url"]
    _sums = json.loads((_lab_dir / "checksums.json").read_text())

    # The lab cluster's CAs live with the lab (not in ~/.local/share/spectra/pki); `lab down` keeps them, so a
    # fresh lab reuses them (the sealed-secrets restore drill removes and restores the directory on purpose).
    pki_dir = str(_lab_dir / "pki")

    node_exporter_download_base_url = f"{_mirror}/prometheus/node_exporter/releases/download"
    node_exporter_sha256 = _sums["node_exporter"]
    # etcd as the lab builds it from its Go modules (lab/artifacts.py), laid out like its GitHub releases.
    etcd_download_base_url = f"{_mirror}/etcd-io/etcd/releases/download"
    etcd_sha256 = _sums.get("etcd", {})
    # Kubernetes as the lab builds it from the Go module proxy (lab/kubernetes_build.py), published on the
    # mirror in the upstream layout; its own checksum table (lab-built sums differ from upstream's). Empty
    # until the binaries are built and published: installs are then refused, naming the missing sum.
    kubernetes_download_base_url = f"{_mirror}/release"
    kubernetes_sha256 = load_table(_lab_dir / "checksums" / "kubernetes.yaml")

    # No container registry answers from the lab: the lab's own registry (plain HTTP on the bridge)
    # mirrors the upstream names, so image references stay as in production (registry.k8s.io/pause:...).
    _registry = json.loads((_lab_dir / "inventory.json").read_text())["registry"]
    containerd_registry_mirrors = {
        "registry.k8s.io": [f"http://{_registry}"],
        "docker.io": [f"http://{_registry}"],
        "quay.io": [f"http://{_registry}"],
    }

    # Alerts go to the lab mirror's webhook recorder (lab/mirror_server.py), as to an operator's endpoint.
    alertmanager_receivers = [{"name": "lab", "type": "webhook", "url": f"{_mirror}/webhook/alerts"}]
    alertmanager_default_receiver = "lab"

    # The Gateway API's and Traefik's CRDs come out of their Go module zips, which the lab mirror serves in the
    # module proxy's layout (lab/images/traefik.py); the same h1 hashes verify them.
    gateway_module_proxy = f"{_mirror}/goproxy"
# the alert test measures how fast NodeDown is delivered and resolved (resolutions go out per group interval)
alertmanager_group_wait = "10s"
alertmanager_group_interval = "30s"

# The lab host (the bridge address) scrapes node exporters too, as a monitoring server outside the cluster
# would (Prometheus in the cluster, on the monitoring host, is in the derived set).
firewall_monitoring_extra_cidrs = ["198.18.0.1/32"]
if inventory.get_group("lab", []):
    # A lab on another subnet (--subnet, side by side with the default one) has its own bridge address:
    # the mirror is served from it.
    firewall_monitoring_extra_cidrs = [f"{urlparse(_mirror).hostname}/32"]
