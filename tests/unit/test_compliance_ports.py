"""Expected listeners and firewall ports come from their owners, for spectra comply and the host-state suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyinfra.api import Inventory

from compliance import checks
from compliance.context import HostContext
from compliance.hosts import context, resolve_hosts
from compliance.listeners import expected_listeners
from compliance.model import failed
from compliance.node.expected import expectations, exporter_address, host_context
from compliance.plugin import load_contexts
from inventories.grouping import HostRecord, build_groups
from tests.unit.compliance_fakes import SS_CONTROL_PLANE, Result, converged_control_plane, probe

pytestmark = pytest.mark.unit

EXPORTER_9200 = {"node_exporter_listen_address": "0.0.0.0:9200"}


def test_expected_listeners_by_role() -> None:
    assert expected_listeners(HostContext("w", roles=["workers"])) == {
        22: "sshd",
        9100: "node_exporter",
        10250: "kubelet",
        20244: "kube-router",  # its health port, on every address
    }
    assert expected_listeners(HostContext("cp", roles=["control_plane", "etcd"])) == {
        22: "sshd", 2379: "etcd", 2380: "etcd", 6443: "kube-apiserver", 9100: "node_exporter", 10250: "kubelet",
        10257: "kube-controller-manager", 10259: "kube-scheduler",  # Prometheus on: they listen on the node
        20244: "kube-router",
    }  # fmt: skip
    no_router = HostContext("w", roles=["workers"], data={"kube_router_enabled": False})
    assert 20244 not in expected_listeners(no_router)
    loopback = HostContext("cp", roles=["control_plane"], data={"control_plane_metrics_bind": "loopback"})
    assert 10257 not in expected_listeners(loopback) and 10259 not in expected_listeners(loopback)
    assert expected_listeners(HostContext("m", roles=["monitoring"])) == {22: "sshd", 9100: "node_exporter"}


def test_ports_follow_the_hosts_settings() -> None:
    moved = {"ssh_port": 2222, "kubelet_port": 11250, "apiserver_port": 7443, "etcd_client_port": 3379,
             "controller_manager_port": 11257}  # fmt: skip
    assert expected_listeners(HostContext("cp", roles=["control_plane", "etcd"], data=moved)) == {
        2222: "sshd", 2380: "etcd", 3379: "etcd", 7443: "kube-apiserver", 9100: "node_exporter", 11250: "kubelet",
        10259: "kube-scheduler", 11257: "kube-controller-manager", 20244: "kube-router",
    }  # fmt: skip
    off = {"node_exporter_enabled": False, "kubelet_enabled": False}
    assert expected_listeners(HostContext("w", roles=["workers"], data=off)) == {22: "sshd"}


def test_the_exporters_listen_address_moves_the_compliance_expectation() -> None:
    worker = HostContext("w", roles=["workers"], data=dict(EXPORTER_9200))
    assert expected_listeners(worker) == {22: "sshd", 9200: "node_exporter", 10250: "kubelet", 20244: "kube-router"}

    on_9100 = converged_control_plane()
    results = {
        check_id: checks.run_check(check_id, probe(on_9100, **EXPORTER_9200))
        for check_id in ("SPX-SVC-010", "SPX-SVC-011")
    }
    assert results["SPX-SVC-010"] == failed("also listening beyond loopback: tcp *:9100 (node_exporter)")
    assert results["SPX-SVC-011"] == failed("nothing listens on 9200/tcp (want node_exporter)")

    on_9200 = converged_control_plane()
    on_9200.commands["ss -Htulnp"] = Result(SS_CONTROL_PLANE.replace("*:9100 ", "*:9200 "))
    for check_id in ("SPX-SVC-010", "SPX-SVC-011"):
        assert checks.run_check(check_id, probe(on_9200, **EXPORTER_9200)).status == "pass", check_id


def _inventory(data: dict[str, object]) -> Inventory:
    groups = dict(build_groups([HostRecord("node1", data, roles=("workers",), zone="lab-a")], inventory_group="lab"))
    all_hosts = groups.pop("all")
    return Inventory((all_hosts, {}), **{name: (members, {}) for name, members in groups.items()})


def test_the_inventorys_exporter_address_reaches_the_host_state_suite(tmp_path: Path) -> None:
    # inventory -> spectra comply's context file -> the suites' contexts
    (target,) = resolve_hosts(_inventory({"ssh_hostname": "192.0.2.1", **EXPORTER_9200}), ["node1"])
    path = tmp_path / "context.json"
    path.write_text(json.dumps(context([target])))
    inventory_context = load_contexts(str(path))["node1"]

    expected = expectations(host_context("node1", inventory_context, lambda: pytest.fail("the unit is not read")))
    assert expected.exporter_port == 9200
    assert expected.listeners == {22: "sshd", 9200: "node_exporter", 10250: "kubelet", 20244: "kube-router"}
    assert 9100 not in expected.listeners
    assert (expected.ssh_port, expected.firewall_table) == (22, "spectra")


EXEC_START = (
    "ExecStart={ path=/usr/local/bin/node_exporter ; argv[]=/usr/local/bin/node_exporter "
    "--web.listen-address=0.0.0.0:9200 --collector.textfile.directory=/var/lib/node_exporter/textfile_collector ; "
    "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }\n"
)


def test_without_an_inventory_the_suite_reads_the_exporters_unit_and_allows_every_role() -> None:
    assert exporter_address(EXEC_START) == "0.0.0.0:9200"
    observed = expectations(host_context("node1", None, lambda: EXEC_START))
    assert observed.exporter_port == 9200
    assert observed.listeners == {
        22: "sshd", 80: "traefik", 443: "traefik", 2379: "etcd", 2380: "etcd", 6443: "kube-apiserver",
        9180: "traefik", 9200: "node_exporter", 10250: "kubelet", 10257: "kube-controller-manager",
        10259: "kube-scheduler", 20244: "kube-router",
    }  # fmt: skip
    # no unit (or no flag in it): the owner's default
    assert expectations(host_context("node1", None, lambda: "")).exporter_port == 9100
