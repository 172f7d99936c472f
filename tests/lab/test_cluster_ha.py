"""High availability: three control planes (each an etcd member), one powered off, and the API still answers
through every survivor's node-local balancer (HAProxy on 127.0.0.1:6443), reads and writes alike.

This module runs its OWN lab beside the default one (which other lab tests use at the same time): its own
state directory, subnet and bridge (``HA_ENV``, overridable with ``SPECTRA_LAB_HA_DIR``,
``SPECTRA_LAB_HA_SUBNET`` and ``SPECTRA_LAB_HA_BRIDGE``), passed to every ``python -m lab`` and ``spectra``
subprocess, and the layout ``ha_layout.yaml``: cp1, cp2 and cp3, roles control_plane + etcd, one per zone.
The fixture takes that lab down, brings it up, converges ``deploys/site.py`` on it, and always takes it down
again at the end (and checks nothing of it is left), so it is gone before the default lab's teardown test.

Measured and printed at the end (never asserted as speed targets): lab boot, first converge, second
converge, memory (PSS) of each node with the cluster running, failover (how long after the power cut each
survivor's first successful read and write came, and which requests failed), and rejoin.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.config import LabConfig
from lab.lab import Lab as LabControl
from tests.lab.conftest import ETCDCTL as LAB_ETCDCTL
from tests.lab.conftest import PKI, REPO, Lab, LabNode

pytestmark = pytest.mark.lab

HA_DIR = Path(os.environ.get("SPECTRA_LAB_HA_DIR", "/var/lib/spectra-lab-ha"))
HA_SUBNET = os.environ.get("SPECTRA_LAB_HA_SUBNET", "198.18.30.0/24")
HA_BRIDGE = os.environ.get("SPECTRA_LAB_HA_BRIDGE", "splabha")
HA_ENV = {"SPECTRA_LAB_DIR": str(HA_DIR), "SPECTRA_LAB_SUBNET": HA_SUBNET, "SPECTRA_LAB_BRIDGE": HA_BRIDGE}
LAYOUT = Path(__file__).with_name("ha_layout.yaml")
NODES = ["cp1", "cp2", "cp3"]

SPECTRA = str(Path(sys.executable).parent / "spectra")
KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=5s"
ETCDCTL = f"{LAB_ETCDCTL} --command-timeout=5s"
PROBE_NAMESPACE = "spectra-ha-probe"
# HAProxy's runtime API on the node (python3 is in every lab node; socat is not)
HAPROXY_STAT = (
    "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
    "s.sendall(b'show stat\\n'); print(s.makefile().read())\""
)
# Probing during the failover: seconds of traffic in all, seconds of it before the power cut, and after how
# long past the cut every request must succeed (HAProxy: 3 failed checks 2 s apart; etcd: a leader election).
PROBE_SECONDS = 60
PROBE_BASELINE = 5
SETTLED_AFTER = 20


def ha_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **HA_ENV, **extra}


def ha_lab_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True, env=ha_env(), timeout=timeout
    )


# The HA lab has only (tainted) control planes and no monitoring host: the addons that keep data on one are
# the default lab's to test (test_monitoring, test_logs, test_autoscaling), and so is the sealed-secrets
# controller (a Deployment that tolerates no control-plane taint) and the gateway (no worker or edge host to
# listen on); this lab tests the control plane.
ADDONS_OFF = [
    f"{switch}=False"
    for switch in ("prometheus_enabled", "alertmanager_enabled", "metrics_server_enabled", "victorialogs_enabled",
                   "victorialogs_agent_enabled", "journal_upload_enabled", "sealed_secrets_enabled", "gateway_enabled")
]  # fmt: skip


def converge(result_file: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    data = [argument for setting in ADDONS_OFF for argument in ("--data", setting)]
    result = subprocess.run(
        [SPECTRA, "deploy", "inventories/lab.py", "deploys/site.py", *data], cwd=REPO, capture_output=True, text=True,
        env=ha_env(SPECTRA_RESULT_FILE=str(result_file)), timeout=2400,
    )  # fmt: skip
    return result, json.loads(result_file.read_text()) if result_file.exists() else {}


def read_ha_lab() -> Lab:
    data = json.loads((HA_DIR / "inventory.json").read_text())
    return Lab(
        nodes=[LabNode(**{k: n[k] for k in ("name", "address", "roles", "zone", "suite")}) for n in data["nodes"]],
        ssh_key=data["ssh_key"],
        known_hosts=data["known_hosts"],
        mirror_url=data["mirror_url"],
    )


def lab_control() -> LabControl:
    return LabControl(LabConfig(nodes=[], subnet=HA_SUBNET, bridge=HA_BRIDGE, state_dir=HA_DIR))


def pss_kib(pid: str) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)


def memory_pss_mib() -> dict[str, float]:
    """PSS of every process in each running node's PID namespace (as benchmarks/lab_boot.py measures it)."""
    namespaces: dict[str, str] = {}
    for node in (lab_control().load_state() or {"nodes": []})["nodes"]:
        pid = node.get("pid")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if pid else []
        if children:  # the node's init, child of systemd-nspawn
            namespaces[os.readlink(f"/proc/{children[0]}/ns/pid")] = node["name"]
    totals = dict.fromkeys(namespaces.values(), 0)
    for entry in Path("/proc").iterdir():
        try:
            name = namespaces.get(os.readlink(entry / "ns/pid")) if entry.name.isdigit() else None
        except OSError:
            continue
        if name is not None:
            totals[name] += pss_kib(entry.name)
    return {name: round(kib / 1024, 1) for name, kib in sorted(totals.items())}


@dataclass
class HaLab:
    lab: Lab
    first_converge: dict[str, Any]
    tmp: Path
    measured: dict[str, Any] = field(default_factory=dict)

    def kubectl(self, node: LabNode, args: str, check: bool = True) -> str:
        return self.lab.ssh(node, f"{KUBECTL} {args}", check=check, timeout=120)


def report(request: pytest.FixtureRequest, ha: HaLab | None, measured: dict[str, Any]) -> None:
    text = json.dumps(measured, indent=2, sort_keys=True)
    if ha is not None:
        (ha.tmp / "ha-measurements.json").write_text(text + "\n")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(f"\nHA lab measurements:\n{text}")
        return
    with capture.global_and_fixture_disabled():
        print(f"\nHA lab measurements:\n{text}")


def failure_text(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed run said: its error lines (pyinfra prints them long before its summary), then its end."""
    lines = [*result.stdout.splitlines(), *result.stderr.splitlines()]  # pyinfra reports on stderr
    errors = [line for line in lines if "rror" in line or "failed" in line]
    return "\n".join(errors[-40:]) + "\n...\n" + result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def ha(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaLab]:
    """The HA lab, up and converged; always taken down afterwards."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run them as root (CI does)")
    measured: dict[str, Any] = {}
    machine_ids: list[str] = []
    result: HaLab | None = None
    try:
        down = ha_lab_cli("down")
        assert down.returncode == 0, f"`lab down` of the HA lab failed before the module:\n{down.stderr}"
        started = time.monotonic()
        up = ha_lab_cli("up", "--config", str(LAYOUT))
        assert up.returncode == 0, f"the HA lab did not start (exit {up.returncode}):\n{up.stderr}{up.stdout}"
        measured["lab_up_seconds"] = round(time.monotonic() - started, 1)
        machine_ids = [n["machine_id"] for n in json.loads((HA_DIR / "state.json").read_text())["nodes"]]
        # the Kubernetes binaries (the cached build) on this lab's mirror, with this lab's checksum table
        built = subprocess.run(
            [sys.executable, "-m", "lab.kubernetes_build", "build"], cwd=REPO, capture_output=True, text=True,
            env=ha_env(), timeout=3600,
        )  # fmt: skip
        assert built.returncode == 0, f"Kubernetes binaries for the HA lab:\n{built.stderr}{built.stdout}"

        tmp = tmp_path_factory.mktemp("ha")
        started = time.monotonic()
        converged, summary = converge(tmp / "first.json")
        measured["first_converge_seconds"] = round(time.monotonic() - started, 1)
        assert converged.returncode == 0, failure_text(converged)
        measured["memory_pss_mib_after_first_converge"] = memory_pss_mib()
        result = HaLab(read_ha_lab(), summary, tmp, measured)
        yield result
    finally:
        try:
            measured["memory_pss_mib_at_end"] = memory_pss_mib()
        finally:
            down = ha_lab_cli("down")
            report(request, result, measured)
            assert down.returncode == 0, f"`lab down` of the HA lab failed:\n{down.stderr}"
            leftovers = lab_control().leftovers(machine_ids)
            assert leftovers == [], leftovers


def etcd_health(ha: HaLab, node: LabNode) -> list[dict[str, Any]]:
    """``etcdctl endpoint health --cluster`` from ``node``: one entry per member's client URL."""
    out = ha.lab.ssh(node, f"{ETCDCTL} endpoint health --cluster -w json", check=False, timeout=60)
    try:
        answers: list[dict[str, Any]] = json.loads(out)
    except ValueError:
        return []
    return answers


def haproxy_servers(ha: HaLab, node: LabNode) -> dict[str, str]:
    """The local balancer's view of the apiservers: server name -> status (UP, DOWN, ...)."""
    rows = csv.reader(ha.lab.ssh(node, HAPROXY_STAT).lstrip("# ").splitlines())
    header = next(rows)
    column = {name: index for index, name in enumerate(header)}
    return {
        row[column["svname"]]: row[column["status"]].split()[0]
        for row in rows
        if row and row[0] == "kube-apiservers" and row[column["svname"]] not in ("FRONTEND", "BACKEND")
    }


def nodes_ready(ha: HaLab, via: LabNode) -> dict[str, str]:
    items = json.loads(ha.kubectl(via, "get nodes -o json", check=False) or '{"items": []}')["items"]
    return {
        item["metadata"]["name"]: {c["type"]: c["status"] for c in item["status"]["conditions"]}.get("Ready", "")
        for item in items
    }


def wait_for(what: str, check: Any, timeout: float, interval: float = 2) -> float:
    """Seconds until ``check()`` returned a true value; fails naming ``what`` and the last value."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{what}: not after {timeout} s (last: {value!r})"
        time.sleep(interval)


@dataclass
class Health:
    """What is not healthy yet (empty: all of it is); false while anything is missing, and says what."""

    missing: dict[str, Any]

    def __bool__(self) -> bool:
        return not self.missing


def whole_cluster_healthy(ha: HaLab, via: LabNode) -> Health:
    missing: dict[str, Any] = {}
    endpoints = apiserver_endpoints(ha, via)
    if endpoints != sorted(node.address for node in ha.lab.nodes):
        missing["kubernetes Service endpoints"] = endpoints
    ready = nodes_ready(ha, via)
    if ready != dict.fromkeys(NODES, "True"):
        missing["nodes Ready"] = ready
    health = etcd_health(ha, via)
    if len(health) != 3 or not all(entry.get("health") for entry in health):
        missing["etcd health"] = health
    for node in ha.lab.nodes:
        servers = haproxy_servers(ha, node)
        if servers != dict.fromkeys(NODES, "UP"):
            missing[f"{node.name} balancer"] = servers
    return Health(missing)


def test_first_converge_builds_three_control_planes(ha: HaLab) -> None:
    assert [node.name for node in ha.lab.nodes] == NODES
    assert all(set(node.roles) == {"control_plane", "etcd"} for node in ha.lab.nodes)
    assert sorted(ha.first_converge["activated_hosts"]) == NODES
    assert ha.first_converge["failed_hosts"] == []


def test_second_converge_changes_nothing(ha: HaLab) -> None:
    started = time.monotonic()
    result, summary = converge(ha.tmp / "second.json")
    ha.measured["second_converge_seconds"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, failure_text(result)
    assert summary["changed_operations"] == {name: [] for name in NODES}, summary["changed_operations"]


def test_three_ready_control_planes_and_three_healthy_etcd_members(ha: HaLab) -> None:
    first = ha.lab.nodes[0]
    ha.measured["nodes_ready_after_converge_seconds"] = round(
        wait_for("every node Ready", lambda: nodes_ready(ha, first) == dict.fromkeys(NODES, "True"), 180), 1
    )
    nodes = {item["metadata"]["name"]: item for item in json.loads(ha.kubectl(first, "get nodes -o json"))["items"]}
    for node in ha.lab.nodes:
        item = nodes[node.name]
        labels = item["metadata"]["labels"]
        assert "node-role.kubernetes.io/control-plane" in labels, f"{node.name}: {labels}"
        assert labels.get("topology.kubernetes.io/zone") == node.zone
        taints = [taint["key"] for taint in item["spec"].get("taints", [])]
        assert "node-role.kubernetes.io/control-plane" in taints, f"{node.name}: {taints}"
        assert {a["type"]: a["address"] for a in item["status"]["addresses"]}["InternalIP"] == node.address

    members = json.loads(ha.lab.ssh(first, f"{ETCDCTL} member list -w json"))["members"]
    assert sorted(member["name"] for member in members) == NODES
    assert all(not member.get("isLearner") for member in members)
    health = etcd_health(ha, first)
    assert len(health) == 3 and all(entry["health"] for entry in health), health
    assert sorted(entry["endpoint"] for entry in health) == sorted(
        f"https://{node.address}:2379" for node in ha.lab.nodes
    )


def test_api_ready_through_every_local_balancer_with_every_apiserver_up(ha: HaLab) -> None:
    assert apiserver_endpoints(ha, ha.lab.nodes[0]) == sorted(node.address for node in ha.lab.nodes)
    for node in ha.lab.nodes:
        assert ha.kubectl(node, "get --raw /readyz").strip() == "ok", node.name
        assert haproxy_servers(ha, node) == dict.fromkeys(NODES, "UP"), node.name
        # each apiserver also answers on its own address (the balancers' backends)
        own = ha.lab.ssh(node, f"curl -sS --cacert {PKI}/ca.crt https://{node.address}:6443/readyz")
        assert own.strip() == "ok", f"{node.name}: {own}"


# One line per round on a survivor: start, end, /readyz through the balancer ok|fail, a ConfigMap created ok|fail;
# an "ERR" line with kubectl's message for each failure.
PROBE = f"""
end=$(( $(date +%s) + {PROBE_SECONDS} )); i=0
while [ "$(date +%s)" -lt "$end" ]; do
  i=$((i+1)); t=$(date +%s.%N)
  if out=$({KUBECTL} get --raw /readyz 2>&1) && [ "$out" = ok ]; then r=ok; else r=fail
    echo "ERR $t readyz: $(echo "$out" | tr '\n' ' ' | cut -c1-200)"; fi
  if out=$({KUBECTL} -n {PROBE_NAMESPACE} create configmap "probe-$(hostname)-$i" --from-literal=t="$t" 2>&1)
  then w=ok; else w=fail; echo "ERR $t write: $(echo "$out" | tr '\n' ' ' | cut -c1-200)"; fi
  echo "$t $(date +%s.%N) $r $w"
done
"""


def apiserver_endpoints(ha: HaLab, via: LabNode) -> list[str]:
    """Addresses behind the ``kubernetes`` Service (in-cluster clients such as CoreDNS): each apiserver
    keeps its own there with a lease and drops out when its lease runs out."""
    out = ha.kubectl(via, "-n default get endpointslice kubernetes -o json", check=False)
    try:
        endpoints = json.loads(out).get("endpoints") or []
    except ValueError:
        return []
    return sorted(address for endpoint in endpoints for address in endpoint.get("addresses", []))


def etcd_leader(ha: HaLab, via: LabNode) -> str:
    status = json.loads(ha.lab.ssh(via, f"{ETCDCTL} endpoint status --cluster -w json"))
    leader = status[0]["Status"]["leader"]
    members = json.loads(ha.lab.ssh(via, f"{ETCDCTL} member list -w json"))["members"]
    return str(next(member["name"] for member in members if member["ID"] == leader))


def test_api_answers_through_the_local_balancers_with_one_control_plane_off(ha: HaLab) -> None:
    """The etcd leader's node loses power; both survivors keep reading and writing through 127.0.0.1:6443."""
    first = ha.lab.nodes[0]
    ha.kubectl(first, f"create namespace {PROBE_NAMESPACE}")
    victim = ha.lab.node(etcd_leader(ha, first))
    survivors = [node for node in ha.lab.nodes if node is not victim]
    ha.measured["failover_stopped_node"] = f"{victim.name} (etcd leader)"

    probes = {
        node.name: subprocess.Popen(
            ha.lab.ssh_args(node, PROBE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for node in survivors
    }
    time.sleep(PROBE_BASELINE)
    cut = time.time()
    stopped = ha_lab_cli("stop", victim.name, "--hard")
    ha.measured["failover_power_cut_command_seconds"] = round(time.time() - cut, 2)
    assert stopped.returncode == 0, stopped.stderr
    # meanwhile: how long in-cluster clients (the kubernetes Service) still get the dead apiserver
    alive = sorted(node.address for node in survivors)
    while time.time() < cut + PROBE_SECONDS and apiserver_endpoints(ha, survivors[0]) != alive:
        time.sleep(1)
    ha.measured["failover_kubernetes_service_without_dead_apiserver_after_cut_seconds"] = round(time.time() - cut, 1)
    outputs = {name: probe.communicate(timeout=PROBE_SECONDS + 120) for name, probe in probes.items()}

    failover: dict[str, Any] = {}
    problems = []
    for name, (out, err) in outputs.items():
        rounds = [line.split() for line in out.splitlines() if not line.startswith("ERR ") and len(line.split()) == 4]
        errors = [line.split(" ", 2) for line in out.splitlines() if line.startswith("ERR ")]
        assert rounds, f"{name}: the probe printed nothing: {err}"
        before = [r for r in rounds if float(r[1]) < cut]
        after = [r for r in rounds if float(r[0]) >= cut]
        failed = [r for r in rounds if float(r[1]) >= cut and "fail" in r[2:]]
        first_ok = next((float(r[1]) - cut for r in after if r[2:] == ["ok", "ok"]), None)
        settled = [r for r in after if float(r[0]) >= cut + SETTLED_AFTER]
        failover[name] = {
            "rounds_before_cut": len(before),
            "rounds_after_cut": len(after),
            "first_ok_read_and_write_after_cut_seconds": None if first_ok is None else round(first_ok, 2),
            "failed_rounds": [
                f"+{float(r[0]) - cut:.1f}s..+{float(r[1]) - cut:.1f}s readyz={r[2]} write={r[3]}" for r in failed
            ],
            "errors": [f"+{float(t) - cut:.1f}s {text}" for _, t, text in errors][:10],
            "rounds_after_settling": len(settled),
            "slowest_round_after_cut_seconds": round(max(float(r[1]) - float(r[0]) for r in after), 2)
            if after
            else None,
        }
        if any("fail" in r[2:] for r in before):
            problems.append(f"{name}: requests failed before the power cut: {before}")
        if first_ok is None:
            problems.append(f"{name}: no request succeeded after the power cut")
        if len(settled) < 5 or any(r[2:] != ["ok", "ok"] for r in settled):
            problems.append(f"{name}: from {SETTLED_AFTER} s after the cut on, not every request succeeded: {settled}")
    ha.measured["failover"] = failover
    for node in survivors:
        servers = haproxy_servers(ha, node)
        expected = {name: ("DOWN" if name == victim.name else "UP") for name in NODES}
        if servers != expected:
            problems.append(f"{node.name}: the balancer sees {servers}, expected {expected}")
    if apiserver_endpoints(ha, survivors[0]) != alive:
        problems.append(
            f"the kubernetes Service still has the stopped apiserver: {apiserver_endpoints(ha, survivors[0])}"
        )
    health = etcd_health(ha, survivors[0])
    ha.measured["failover_etcd_health"] = {entry["endpoint"]: entry["health"] for entry in health}
    if sum(1 for entry in health if entry["health"]) != 2:
        problems.append(f"etcd: expected 2 healthy members of 3, got {health}")
    assert problems == [], "\n".join(problems)


def test_the_stopped_control_plane_rejoins(ha: HaLab) -> None:
    state = lab_control().load_state()
    assert state is not None
    victim = ha.lab.node(next(node["name"] for node in state["nodes"] if not node["pid"]))
    survivor = next(node for node in ha.lab.nodes if node is not victim)
    started = time.monotonic()
    booted = ha_lab_cli("start", victim.name)
    assert booted.returncode == 0, booted.stderr
    ha.measured["rejoin_boot_seconds"] = round(time.monotonic() - started, 1)
    try:
        waited = wait_for(
            f"{victim.name} Ready, 3 healthy etcd members, every balancer sees 3 apiservers UP, 3 behind the Service",
            lambda: whole_cluster_healthy(ha, survivor),
            300,
        )
    except AssertionError as error:
        services = "etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy haproxy containerd"
        victim_state = ha.lab.ssh(
            victim,
            f"systemctl is-active {services}; systemctl --no-pager --failed; "
            "journalctl --no-pager -n 40 -u etcd -u kube-apiserver -u kubelet -u haproxy",
            check=False,
        )
        raise AssertionError(f"{error}\n{victim.name} after its restart:\n{victim_state[-6000:]}") from None
    ha.measured["rejoin_healthy_after_boot_seconds"] = round(waited, 1)
    for node in ha.lab.nodes:
        assert ha.kubectl(node, "get --raw /readyz").strip() == "ok", node.name
    # the rejoined member's own copy (a serializable read: its local store) holds what was written while it
    # was off
    keys = ha.lab.ssh(
        victim, f"{ETCDCTL} get --consistency=s --prefix --keys-only /registry/configmaps/{PROBE_NAMESPACE}/"
    ).split()
    written = ha.kubectl(survivor, f"-n {PROBE_NAMESPACE} get configmaps -o name").split()
    assert len(keys) == len(written) > 10, (keys, written)
