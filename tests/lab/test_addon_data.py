"""The addons' data on node-local volumes survives a reboot of the node that holds it (node2, the monitoring
host): Prometheus still answers for a time before the reboot, and VictoriaLogs still has every line of a
window before it."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from typing import Any

import pytest

from tests.lab.cluster_support import kubectl, until
from tests.lab.conftest import Lab, lab_cli

pytestmark = pytest.mark.lab

PROMETHEUS = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy"
LOGS = "/api/v1/namespaces/logging/services/victorialogs:9428/proxy"


def prometheus_up_at(lab: Lab, when: float) -> int:
    """How many `up` series Prometheus has at unix time ``when``."""
    query = urllib.parse.urlencode({"query": "up", "time": f"{when:.3f}"})
    body = json.loads(kubectl(lab, f"get --raw '{PROMETHEUS}/api/v1/query?{query}'"))
    return len(body["data"]["result"])


def lines_between(lab: Lab, start: float, end: float) -> int:
    """How many log lines VictoriaLogs holds with a time in [start, end)."""

    def iso(when: float) -> str:
        return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    query = urllib.parse.urlencode({"query": f"_time:[{iso(start)}, {iso(end)}) | stats count() as lines"})
    out = kubectl(lab, f"get --raw '{LOGS}/select/logsql/query?{query}'", timeout=60)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return int(rows[0]["lines"]) if rows else 0


def test_metrics_and_logs_survive_a_reboot_of_their_node(converged: dict[str, Any], lab: Lab) -> None:
    holder = lab.node("node2")
    assert "monitoring" in holder.roles
    end = float(int(time.time()) - 60)  # a closed window: nothing more arrives for it
    start = end - 300
    metrics_before = until("Prometheus data before the reboot", lambda: ((n := prometheus_up_at(lab, end)) > 0, n))
    logs_before = until("log lines before the reboot", lambda: ((n := lines_between(lab, start, end)) > 0, n))
    assert lab_cli("restart", holder.name).returncode == 0
    kubectl(lab, f"wait --for=condition=Ready node/{holder.name} --timeout=300s")
    for namespace, statefulset in (("monitoring", "prometheus"), ("logging", "victorialogs")):
        kubectl(lab, f"-n {namespace} rollout status statefulset/{statefulset} --timeout=300s")

    def answered() -> tuple[bool, Any]:
        try:
            return True, (prometheus_up_at(lab, end), lines_between(lab, start, end))
        except AssertionError as error:  # the proxy answers 503 until the pods are ready behind it
            return False, str(error)[-300:]

    metrics_after, logs_after = until("Prometheus and VictoriaLogs answering after the reboot", answered, 300)
    print(f"\nbefore the reboot of {holder.name}: {metrics_before} up series, {logs_before} log lines in the window; "
          f"after: {metrics_after} and {logs_after}")  # fmt: skip
    assert metrics_after == metrics_before
    assert logs_after == logs_before
