"""kube-bench v0.15.6 (CIS Kubernetes Benchmark 1.12, an independent checker) on every node of the converged lab.

The binary and upstream's ``cfg/`` come from the lab's cache (``lab.tools.kube_bench_binary``: built once from
the Go module); ``compliance/kube-bench/cis-1.12/config.yaml`` is laid over ``cfg/`` to tell it this toolkit's
layout (systemd units, kubeconfigs, PKI). The master target runs on control planes, the etcd target on etcd
members, the node target on every kubelet host. Each target's FAILs and WARNs must be exactly the ones
documented (README: kube-bench), each with its reason below: a new FAIL or WARN fails the test, and so does one
that is gone (take it off the list).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lab.tools import KUBE_BENCH_BENCHMARK, KUBE_BENCH_OVERLAY, KUBE_BENCH_VERSION, kube_bench_binary, kube_bench_cfg
from tests.lab.conftest import Lab, LabNode

pytestmark = pytest.mark.lab

REMOTE_DIR = "/var/tmp/spectra-kube-bench"
# The WARNs that remain by target, each with why it cannot pass (the README's list says the same).
EXPECTED_WARN: dict[str, dict[str, str]] = {
    "master": {
        "1.2.1": "--anonymous-auth is not a flag here: the structured authentication configuration lets anonymous "
        "requests reach /livez, /readyz and /healthz only (the balancers' probes); the two cannot be combined",
        "1.2.11": "AlwaysPullImages is off by choice: every pod start would need the registry (an outage would stop "
        "restarts); the cluster has no private images shared between tenants",
        "1.2.20": "manual check (--request-timeout as appropriate): kube-bench always warns",
    },
    "etcd": {},
    "node": {
        "4.2.7": "--hostname-override is set on purpose: the node registers under its inventory name, the name in "
        "its PKI certificate (system:node:<name>), which need not be the host name",
    },
}
# The FAILs that remain, by target: not yet resolved (issue 13's goal is none). The lab runs Prometheus, so
# control_plane_metrics_bind (auto) binds the controller-manager and scheduler to the node address for their
# scrapes (authenticated, the firewall open to the monitoring hosts only); CIS wants 127.0.0.1. `loopback`
# passes both and loses those two scrape jobs. A forwarder from the node address to loopback would pass the
# check with the same exposure, so it is not done.
EXPECTED_FAIL: dict[str, dict[str, str]] = {
    "master": {
        "1.3.7": "controller-manager --bind-address is the node address while Prometheus scrapes it",
        "1.4.2": "scheduler --bind-address is the node address while Prometheus scrapes it",
    },
    "etcd": {},
    "node": {},
}
TARGETS_OF_ROLE = {"control_plane": "master", "etcd": "etcd"}
KUBELET_ROLES = {"control_plane", "workers", "monitoring"}  # cluster_node_roles' default: all lab nodes


def targets(node: LabNode) -> list[str]:
    found = [target for role, target in TARGETS_OF_ROLE.items() if role in node.roles]
    if KUBELET_ROLES & set(node.roles):
        found.append("node")
    return found


def copy_to(lab: Lab, node: LabNode, binary: Path, cfg: Path) -> None:
    """``bin/kube-bench`` and upstream's ``cfg/`` to REMOTE_DIR on the node (a tar over ssh), then our overlay
    over ``cfg/<benchmark>/config.yaml``."""
    cache = cfg.parent
    assert binary.parent.parent == cache, f"{binary} is not beside {cfg}"
    tar = subprocess.run(
        ["tar", "-C", str(cache), "-cf", "-", "bin/kube-bench", "cfg"], capture_output=True, check=True
    )
    unpack = f"rm -rf {REMOTE_DIR} && mkdir -m 0700 -p {REMOTE_DIR} && tar -C {REMOTE_DIR} -xf -"
    overlay = KUBE_BENCH_OVERLAY / KUBE_BENCH_BENCHMARK / "config.yaml"
    place = f"cat > {REMOTE_DIR}/cfg/{KUBE_BENCH_BENCHMARK}/config.yaml"
    for command, data in ((unpack, tar.stdout), (place, overlay.read_bytes())):
        done = subprocess.run(lab.ssh_args(node, command), input=data, capture_output=True, timeout=300)
        assert done.returncode == 0, f"{node.name}: `{command}` failed: {done.stderr.decode()[-2000:]}"


def run_kube_bench(lab: Lab, node: LabNode, wanted: list[str]) -> dict[str, Any]:
    command = (
        f"cd {REMOTE_DIR} && ./bin/kube-bench --config-dir cfg --config cfg/config.yaml "
        f"--benchmark {KUBE_BENCH_BENCHMARK} run --targets {shlex.quote(','.join(wanted))} --json "
        f"--outputfile {REMOTE_DIR}/result.json --noremediations >/dev/null && cat {REMOTE_DIR}/result.json"
    )
    return dict(json.loads(lab.ssh(node, command, timeout=600)))


def results(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """target -> {check id: PASS/FAIL/WARN/INFO} from kube-bench's --json output."""
    found: dict[str, dict[str, str]] = {}
    for controls in report["Controls"]:
        checks = found.setdefault(controls["node_type"], {})
        for group in controls["tests"]:
            for result in group["results"]:
                checks[result["test_number"]] = result["status"]
    return found


@pytest.fixture(scope="module")
def kube_bench() -> tuple[Path, Path]:
    binary = kube_bench_binary()  # built on a cache miss (about a minute), else taken from the cache
    return binary, kube_bench_cfg()


def test_kube_bench_cis_1_12_only_the_documented_fails_and_warns(
    lab: Lab, converged: dict[str, Any], kube_bench: tuple[Path, Path]
) -> None:
    binary, cfg = kube_bench
    problems = []
    print(f"\nkube-bench {KUBE_BENCH_VERSION}, {KUBE_BENCH_BENCHMARK}")
    for node in lab.nodes:
        wanted = targets(node)
        assert wanted, f"{node.name}: no kube-bench target for roles {node.roles}"
        copy_to(lab, node, binary, cfg)
        try:
            found = results(run_kube_bench(lab, node, wanted))
        finally:
            lab.ssh(node, f"rm -rf {REMOTE_DIR}", check=False)
        assert sorted(found) == sorted(wanted), f"{node.name}: targets run {sorted(found)}, asked {wanted}"
        for target in wanted:
            checks = found[target]
            counts = Counter(checks.values())
            print(f"{node.name} ({node.suite}) {target}: PASS {counts['PASS']} FAIL {counts['FAIL']} "
                  f"WARN {counts['WARN']} INFO {counts['INFO']}")  # fmt: skip
            failed = sorted(check for check, status in checks.items() if status == "FAIL")
            warned = {check for check, status in checks.items() if status == "WARN"}
            if failed != sorted(EXPECTED_FAIL[target]):
                problems.append(f"{node.name} {target}: FAIL {failed}; documented {sorted(EXPECTED_FAIL[target])}")
            if warned != set(EXPECTED_WARN[target]):
                problems.append(
                    f"{node.name} {target}: WARN {sorted(warned)}; documented {sorted(EXPECTED_WARN[target])} "
                    f"(new: {sorted(warned - set(EXPECTED_WARN[target]))}, "
                    f"gone: {sorted(set(EXPECTED_WARN[target]) - warned)})"
                )
    assert not problems, "\n".join(problems)
