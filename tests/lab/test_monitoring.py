"""The addons on the lab cluster, as deploys/site.py pushes them: Prometheus scraping every target for real,
its alert rules loaded and evaluated, certificate expiry metrics from every node, the node-local volume
surviving a pod restart, drift found by a server-side diff and put back, and an apiserver rejection
stopping a set before anything of it changes.

Alerts: the Watchdog reaches the lab's webhook receiver (the mirror records deliveries, as an operator's
endpoint would); node3 powered off makes NodeDown fire in Alertmanager and reach the receiver (the times are
printed), and it resolves when node3 is back.

Prometheus' and Alertmanager's APIs are reached through the apiserver's service proxy (``kubectl get --raw``),
as an operator without a NodePort would.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.lab.cluster_support import control_plane, kubectl, until
from tests.lab.conftest import LAB_DIR, SPECTRA, Lab, lab_cli, spectra_deploy

pytestmark = pytest.mark.lab

PROXY = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy"
ALERTMANAGER = "/api/v1/namespaces/monitoring/services/alertmanager:9093/proxy"
WEBHOOK_LOG = LAB_DIR / "webhooks" / "alerts.jsonl"
# Every job and how many targets it has on the 3-node lab (1 control plane + etcd, 2 workers)
EXPECTED_TARGETS = {
    "prometheus": 1, "node-exporter": 3, "kubelet": 3, "cadvisor": 3, "apiserver": 1, "etcd": 1,
    "kube-controller-manager": 1, "kube-scheduler": 1, "coredns": 2, "alertmanager": 1,
    "metrics-server": 1, "gateway": 2,
}  # fmt: skip


def api(lab: Lab, path: str, **query: str) -> Any:
    url = f"{PROXY}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    body = json.loads(kubectl(lab, f"get --raw '{url}'"))
    assert body.get("status") == "success", body
    return body["data"]


def test_every_scrape_target_is_up(converged: dict[str, Any], lab: Lab) -> None:
    def targets() -> tuple[bool, Any]:
        active = api(lab, "/api/v1/targets", state="active")["activeTargets"]
        by_job: dict[str, list[str]] = {}
        for target in active:
            by_job.setdefault(target["labels"]["job"], []).append(target["health"])
        counts = {job: len(health) for job, health in by_job.items()}
        healthy = counts == EXPECTED_TARGETS and all(h == "up" for hs in by_job.values() for h in hs)
        failing = [(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in active if t["health"] != "up"]
        return healthy, {"counts": counts, "failing": failing}

    until("every target up", targets, timeout=240)
    # the scraped data is there, not only the targets: `up` is 1 for every series of every job
    series = api(lab, "/api/v1/query", query="up")["result"]
    assert {s["metric"]["job"] for s in series} == set(EXPECTED_TARGETS)
    assert all(s["value"][1] == "1" for s in series), series


def test_kubelet_cadvisor_and_etcd_metrics_flow(converged: dict[str, Any], lab: Lab) -> None:
    for query in (
        'kubelet_running_pods{job="kubelet"}',
        'container_cpu_usage_seconds_total{job="cadvisor",namespace="monitoring"}',
        'etcd_server_has_leader{job="etcd"}',
        'apiserver_request_total{job="apiserver"}',
        'coredns_dns_requests_total{job="coredns"}',
        'node_filesystem_avail_bytes{job="node-exporter",mountpoint="/"}',
    ):

        def found(q: str = query) -> tuple[bool, Any]:
            series = api(lab, "/api/v1/query", query=q)["result"]
            return bool(series), series

        result = until(query, found, 120)
        assert result, query


def test_certificate_expiry_is_exported_from_every_node(converged: dict[str, Any], lab: Lab) -> None:
    query = 'count by (node) (spectra_certificate_expiry_timestamp_seconds{component="kubelet"})'
    result = until("certificate metrics", lambda: (len(r := api(lab, "/api/v1/query", query=query)["result"]) == 3, r))
    assert sorted(s["metric"]["node"] for s in result) == sorted(node.name for node in lab.nodes)
    # apiserver and etcd certificates on the control plane, in the future
    soon = api(lab, "/api/v1/query", query='spectra_certificate_expiry_timestamp_seconds{component=~"apiserver|etcd"}')
    assert soon["result"] and all(float(s["value"][1]) > time.time() + 30 * 86400 for s in soon["result"])


def test_rules_are_loaded_and_the_watchdog_fires(converged: dict[str, Any], lab: Lab) -> None:
    groups = api(lab, "/api/v1/rules")["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"NodeDown", "KubeletDown", "EtcdNoLeader", "CertificateExpiringSoon", "Watchdog"} <= names
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"]), groups

    def firing() -> tuple[bool, Any]:
        alerts = api(lab, "/api/v1/alerts")["alerts"]
        return any(a["labels"]["alertname"] == "Watchdog" and a["state"] == "firing" for a in alerts), alerts

    alerts = until("Watchdog firing", firing, timeout=120)
    # a healthy cluster: nothing else firing but the watchdog
    others = [a["labels"] for a in alerts if a["state"] == "firing" and a["labels"]["alertname"] != "Watchdog"]
    assert others == [], others


def test_tsdb_survives_a_pod_restart(converged: dict[str, Any], lab: Lab) -> None:
    def oldest() -> float:
        status = api(lab, "/api/v1/status/tsdb")
        return float(status["headStats"]["minTime"])

    before = until("TSDB head", lambda: ((v := oldest()) > 0, v), timeout=60)
    kubectl(lab, "-n monitoring delete pod prometheus-0 --wait=true", check=True)
    kubectl(lab, "-n monitoring rollout status statefulset/prometheus --timeout=180s")
    until("Prometheus ready again", lambda: (bool(api(lab, "/api/v1/query", query="up")["result"]), None), 120)
    # the head block is replayed from the WAL on the volume: it still starts where it started before
    assert oldest() <= before
    volume = lab.ssh(lab.node("node2"), "ls /var/lib/spectra/volumes/monitoring/data-prometheus-0")
    assert "wal" in volume.split()


def test_hand_edit_is_reported_as_drift_and_put_back(converged: dict[str, Any], lab: Lab, tmp_path: Path) -> None:
    # a field the deploy owns, changed by another manager
    kubectl(lab, "-n monitoring label --overwrite service prometheus app.kubernetes.io/managed-by=by-hand")
    drift = subprocess.run(
        [SPECTRA, "drift", "inventories/lab.py", "deploys/site.py"], capture_output=True, text=True, timeout=900,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert drift.returncode == 3, drift.stdout[-3000:] + drift.stderr[-3000:]
    assert "Addon set prometheus (drifted: v1.Service.monitoring.prometheus)" in drift.stdout
    result, _ = spectra_deploy(tmp_path / "fix.json", "inventories/lab.py", "deploys/site.py")
    assert result.returncode == 0, result.stderr[-3000:]
    label = r"{.metadata.labels.app\.kubernetes\.io/managed-by}"
    assert kubectl(lab, f"-n monitoring get service prometheus -o jsonpath='{label}'").strip() == "spectra"
    _, again = spectra_deploy(tmp_path / "again.json", "inventories/lab.py", "deploys/site.py")
    assert again["changed_operations"] == {"node1": [], "node2": [], "node3": []}


def test_apiserver_rejection_stops_the_set_with_its_message(
    converged: dict[str, Any], lab: Lab, tmp_path: Path
) -> None:
    kept = lab.ssh(control_plane(lab), "sha256sum /etc/kubernetes/addons/local-storage.yaml").split()[0]
    # a PersistentVolume's source is immutable: the apiserver refuses the changed path in the dry run
    result, _ = spectra_deploy(
        tmp_path / "bad.json", "inventories/lab.py", "deploys/site.py", "--data", "local_storage_dir=/srv/elsewhere"
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "is immutable" in output or "forbidden" in output, output[-3000:]
    assert lab.ssh(control_plane(lab), "sha256sum /etc/kubernetes/addons/local-storage.yaml").split()[0] == kept
    path = kubectl(lab, "get pv spectra-monitoring-data-prometheus-0 -o jsonpath={.spec.local.path}").strip()
    assert path == "/var/lib/spectra/volumes/monitoring/data-prometheus-0"


def delivered(since: float) -> list[dict[str, Any]]:
    """Alerts the lab receiver got after ``since`` (unix time), with when each delivery arrived."""
    if not WEBHOOK_LOG.exists():
        return []
    found = []
    for line in WEBHOOK_LOG.read_text().splitlines():
        record = json.loads(line)
        if record["received"] >= since:
            found += [{**alert, "received": record["received"]} for alert in record["body"]["alerts"]]
    return found


def alertmanager_alerts(lab: Lab) -> list[dict[str, Any]]:
    return list(json.loads(kubectl(lab, f"get --raw '{ALERTMANAGER}/api/v2/alerts'")))


def test_watchdog_reaches_the_receiver(converged: dict[str, Any], lab: Lab) -> None:
    def watchdog() -> tuple[bool, Any]:
        found = [a for a in delivered(0) if a["labels"]["alertname"] == "Watchdog" and a["status"] == "firing"]
        return bool(found), found

    until("Watchdog delivered to the lab webhook", watchdog, timeout=180)


def test_node_powered_off_fires_node_down_and_resolves(converged: dict[str, Any], lab: Lab) -> None:
    victim = lab.node("node3")
    cut = time.time()
    assert lab_cli("stop", victim.name, "--hard").returncode == 0
    try:

        def node_down_in_alertmanager() -> tuple[bool, Any]:
            alerts = [a for a in alertmanager_alerts(lab) if a["labels"]["alertname"] == "NodeDown"]
            return any(a["labels"].get("node") == victim.name for a in alerts), alerts

        until("NodeDown active in Alertmanager", node_down_in_alertmanager, timeout=300, every=2)
        in_alertmanager = time.time() - cut

        def node_down_delivered() -> tuple[bool, Any]:
            found = [a for a in delivered(cut) if a["labels"]["alertname"] == "NodeDown" and a["status"] == "firing"]
            return any(a["labels"].get("node") == victim.name for a in found), found

        (first, *_) = until("NodeDown delivered", node_down_delivered, timeout=120, every=2)
        print(f"\nNodeDown: active in Alertmanager {in_alertmanager:.0f} s after the power cut, "
              f"delivered to the receiver {first['received'] - cut:.0f} s after it")  # fmt: skip
        assert in_alertmanager < 300
    finally:
        assert lab_cli("start", victim.name).returncode == 0
    back = time.time()

    def resolved() -> tuple[bool, Any]:
        found = [a for a in delivered(back) if a["labels"]["alertname"] == "NodeDown" and a["status"] == "resolved"]
        return bool(found), found

    until("NodeDown resolved at the receiver", resolved, timeout=420, every=3)
    print(f"NodeDown resolved at the receiver {time.time() - back:.0f} s after node3 was started")
    kubectl(lab, f"wait --for=condition=Ready node/{victim.name} --timeout=300s")
