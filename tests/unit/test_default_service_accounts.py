"""The default ServiceAccounts of the namespaces the toolkit makes mount no API token (CIS 5.1.6)."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError

from deploys.components import cluster_addons
from facts.addons import AddonSets
from facts.files import FileStates
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

CP = {"roles": ["control_plane"], "ssh_hostname": "10.0.0.11"}
FILES = {FileStates: lambda paths, **_: dict.fromkeys(paths), AddonSets: {}}
KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
DIR = "/etc/kubernetes/addons"
TEMPLATES = pathlib.Path(__file__).resolve().parents[2] / "templates" / "addons"


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_every_namespace_made_gets_a_default_service_account_without_token() -> None:
    result = run_component(cluster_addons.COMPONENT, facts=FILES, data=CP)
    namespaces = {doc["metadata"]["name"] for doc in documents(result.uploads[f"{DIR}/namespaces.yaml.spectra-new"])}
    accounts = documents(result.uploads[f"{DIR}/default-service-accounts.yaml.spectra-new"])
    assert namespaces and {doc["metadata"]["namespace"] for doc in accounts} == namespaces
    for doc in accounts:
        assert doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == "default"
        assert doc["automountServiceAccountToken"] is False
        assert doc["metadata"]["labels"]["spectra.io/addon-set"] == "default-service-accounts"
    # a set of its own, applied after the namespaces (its dry run needs them): never kube-system or default
    assert not namespaces & {"kube-system", "default", "kube-public", "kube-node-lease"}
    staged = f"{DIR}/default-service-accounts.yaml.spectra-new"
    apply = f"{KUBECTL} apply --server-side --field-manager=spectra --force-conflicts -f {staged}"
    sets = [op.name for op in result.ops]
    assert sets.index(next(name for name in sets if "Addon set namespaces" in name)) < sets.index(
        next(name for name in sets if "Addon set default-service-accounts" in name)
    )
    commands = result.op("Addon set default-service-accounts").commands
    assert commands[1:4] == [f"chmod 0600 {staged}", f"{apply} --dry-run=server -o name", apply]


def test_default_service_account_tokens_can_be_left_alone() -> None:
    result = run_component(cluster_addons.COMPONENT, facts=FILES, data={**CP, "cluster_addons_default_sa_token": True})
    assert f"{DIR}/default-service-accounts.yaml.spectra-new" not in result.uploads
    assert result.op("Addon set default-service-accounts").commands == []
    with pytest.raises(DeployError, match="cluster_addons_default_sa_token='no': true or false"):
        run_component(cluster_addons.COMPONENT, facts=FILES, data={**CP, "cluster_addons_default_sa_token": "no"})


def test_addon_pods_that_use_the_default_service_account_need_no_token() -> None:
    """Every addon workload either names a ServiceAccount of its own or takes no token: closing the default
    ServiceAccounts changes nothing for them."""
    workloads = re.compile(r"^kind: (Deployment|DaemonSet|StatefulSet|Job|CronJob)$", re.MULTILINE)
    for path in sorted(TEMPLATES.glob("*/*.yaml.j2")):
        text = path.read_text()
        if not workloads.search(text):
            continue
        assert "serviceAccountName:" in text or "automountServiceAccountToken: false" in text, path
