"""How an addon set is pushed (deploys/addon.py, facts/addons.py): commands in order, no-op when converged,
re-applied on drift, pruned when an object leaves the set, and the drift fact's parsing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError

from deploys import addon
from deploys.components import cluster_addons, coredns
from facts.addons import AddonSets, describe, drifted_objects
from facts.files import FileStates
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

CP = {"roles": ["control_plane"], "ssh_hostname": "10.0.0.11"}
KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
STAGED = "/etc/kubernetes/addons/coredns.yaml.spectra-new"
APPLY = f"{KUBECTL} apply --server-side --field-manager=spectra --force-conflicts -f {STAGED}"


def manifest() -> str:
    return addon.render_addon(coredns.ADDON, {})


def push_coredns(state: dict[str, Any] | None) -> Any:
    states = {"coredns": state} if state else {}
    return run_component(coredns.COMPONENT, facts={AddonSets: states}, data=CP)


def test_never_applied_set_is_dry_run_applied_waited_for_and_kept_in_that_order() -> None:
    result = push_coredns(None)
    (op,) = result.ops
    assert op.name == "Addon coredns | Addon set coredns (never applied)"
    waited = f"{KUBECTL} -n kube-system"
    assert op.commands == [
        f"upload {STAGED} sha256=" + op.commands[0].split("sha256=")[1],
        f"chmod 0600 {STAGED}",
        f"{APPLY} --dry-run=server -o name",
        APPLY,
        f"{waited} rollout status deployment/coredns --timeout=300s || {{ {waited} get pods -o wide >&2; "
        f"{waited} get events --sort-by=.lastTimestamp >&2; exit 1; }}",
        f"mv -f {STAGED} /etc/kubernetes/addons/coredns.yaml",
    ]
    assert result.uploads[STAGED] == manifest()


def test_every_object_is_labelled_with_its_set_and_manager() -> None:
    for document in yaml.safe_load_all(manifest()):
        labels = document["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "spectra"
        assert labels["spectra.io/addon-set"] == "coredns"


def test_converged_set_costs_nothing() -> None:
    result = push_coredns({"kept": manifest(), "drift": [], "error": None})
    assert result.commands == []
    assert result.noops == ["addon set coredns: applied as rendered, no drift"]
    # the state comes with the run's other facts: one read, and no kubectl of its own
    assert [name for name, _ in result.fact_reads] == ["facts.addons.AddonSets"]


def test_hand_edit_found_by_the_diff_is_put_back() -> None:
    drifted = ["apps.v1.Deployment.kube-system.coredns"]
    result = push_coredns({"kept": manifest(), "drift": drifted, "error": None})
    (op,) = result.ops
    assert op.name.endswith("Addon set coredns (drifted: apps.v1.Deployment.kube-system.coredns)")
    assert APPLY in op.commands


def test_unknown_drift_applies_again_and_says_why() -> None:
    result = push_coredns({"kept": manifest(), "drift": None, "error": "kubectl diff exited 2: refused"})
    assert result.ops[0].name.endswith("(drift unknown (kubectl diff exited 2: refused))")
    assert APPLY in result.commands


def test_object_gone_from_the_set_is_deleted_after_the_apply() -> None:
    extra = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "old"}}
    stale = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gone", "namespace": "kube-system"}}
    kept = manifest() + yaml.safe_dump_all([extra, stale], explicit_start=True)
    commands = push_coredns({"kept": kept, "drift": [], "error": None}).commands
    deletes = [c for c in commands if " delete " in c]
    assert deletes == [
        f"{KUBECTL} delete --ignore-not-found --wait=false ClusterRole.v1.rbac.authorization.k8s.io/old",
        f"{KUBECTL} delete -n kube-system --ignore-not-found --wait=false ConfigMap/gone",
    ]
    assert commands.index(APPLY) < commands.index(deletes[0])


def test_object_moving_api_version_is_not_pruned() -> None:
    kept = manifest().replace("apiVersion: rbac.authorization.k8s.io/v1", "apiVersion: rbac.authorization.k8s.io/v2")
    assert addon.pruned(kept, manifest()) == []


def test_only_the_first_control_plane_pushes_and_the_switch_turns_it_off() -> None:
    assert run_component(coredns.COMPONENT, facts={}, data={"roles": ["workers"]}).ops == []
    later = run_component(coredns.COMPONENT, facts={}, data=CP, others={"cp0": {"roles": ["control_plane"]}})
    assert later.ops == [] and later.fact_reads == []
    assert run_component(coredns.COMPONENT, facts={}, data={**CP, "coredns_enabled": False}).ops == []
    assert run_component(coredns.COMPONENT, facts={}, data={**CP, "cluster_addons_enabled": False}).ops == []


def test_bad_addon_setting_stops_before_any_operation() -> None:
    with pytest.raises(DeployError, match="(?s)invalid settings:.*coredns_replicas=0"):
        run_component(coredns.COMPONENT, facts={}, data={**CP, "coredns_replicas": 0})


def test_namespaces_set_holds_enabled_addons_namespaces_with_pod_security() -> None:
    files = {FileStates: lambda paths, **_: dict.fromkeys(paths), AddonSets: {}}
    namespaces = addon.registered()
    switches = {one.switch: True for one in namespaces}  # every addon on (the gateway is off by default)
    result = run_component(cluster_addons.COMPONENT, facts=files, data={**CP, **switches})
    assert result.ops[0].commands[0] == "mkdir -p /etc/kubernetes/addons"
    assert "chmod 700 /etc/kubernetes/addons" in result.ops[0].commands
    wanted = cluster_addons.namespaces(namespaces, switches)
    if not wanted:
        assert len(result.ops) == 1
        return
    uploaded = yaml.safe_load_all(result.uploads["/etc/kubernetes/addons/namespaces.yaml.spectra-new"])
    found = {doc["metadata"]["name"]: doc["metadata"]["labels"] for doc in uploaded}
    assert set(found) == set(wanted)
    for name, labels in found.items():
        assert labels["pod-security.kubernetes.io/enforce"] == wanted[name]


def test_shared_namespace_takes_the_looser_level() -> None:
    strict = addon.Addon("a", {"a_enabled": True}, (), dict, namespace="ns", pod_security="restricted")
    loose = addon.Addon("b", {"b_enabled": True}, (), dict, namespace="ns", pod_security="privileged")
    off = addon.Addon("c", {"c_enabled": False}, (), dict, namespace="other")
    settings = {"a_enabled": True, "b_enabled": True, "c_enabled": False}
    assert cluster_addons.namespaces([strict, loose, off], settings) == {"ns": "privileged"}


# --- the drift fact ---------------------------------------------------------------------------------------


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_fact_reads_kept_manifest_and_drift() -> None:
    diff = (
        "Files /tmp/LIVE-1/apps.v1.Deployment.kube-system.coredns and /tmp/MERGED-2/apps.v1.Deployment."
        "kube-system.coredns differ\nOnly in /tmp/MERGED-2: v1.ConfigMap.kube-system.coredns\n"
    )
    output = [
        f"K|coredns|{encoded('kind: X')}",
        f"R|coredns|1|{encoded(diff)}",
        f"K|metrics|{encoded('kind: Y')}",
        f"R|metrics|0|{encoded('')}",
        f"K|logs|{encoded('kind: Z')}",
        f"R|logs|1|{encoded('error: the server could not find the requested resource')}",
        f"K|old|{encoded('kind: W')}",
    ]
    states = AddonSets().process(output)
    assert states["coredns"] == {
        "kept": "kind: X",
        "drift": ["apps.v1.Deployment.kube-system.coredns", "v1.ConfigMap.kube-system.coredns"],
        "error": None,
    }
    assert states["metrics"] == {"kept": "kind: Y", "drift": [], "error": None}
    assert states["logs"]["drift"] is None
    assert states["logs"]["error"] == "kubectl diff exited 1: error: the server could not find the requested resource"
    assert states["old"]["error"] == "kubectl not installed" and "never" not in describe(states["old"])
    assert describe(None) == "never applied" and describe(states["metrics"]) == ""


def test_drift_parser_ignores_other_lines() -> None:
    assert drifted_objects("warning: something\n") == []


def test_fact_command_names_every_set_once() -> None:
    command = AddonSets().command("/etc/kubernetes/addons/", ["coredns", "monitoring"], "/k", "/c").get_raw_value()
    assert command.endswith("sh /etc/kubernetes/addons /k /c spectra coredns monitoring")
    assert "diff --server-side --force-conflicts" in command
