"""Settings have one owner and one set of checks: `spectra validate` and plain pyinfra refuse the same values.

The processes run against pyinfra's @fake connector hosts (nothing is reached): `spectra validate` must name
each bad value where it was set, and `pyinfra -y INV deploys/node.py` must stop at prepare, before any
operation, with the same messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploys import settings
from spectra import cluster_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group

    _records = [
        HostRecord("@fake/cp1", {"ssh_hostname": "192.0.2.1"}, roles=("control_plane", "etcd"), zone="z-a"),
        HostRecord("@fake/w1", {"ssh_hostname": "192.0.2.2"}, roles=("workers",), zone="z-b"),
    ]
    globals().update(build_groups(_records, inventory_group=file_group(__file__)))
"""

# Values that, before the checks moved beside DEFAULTS, only failed in the middle of a deploy.
BAD_ALL = """
    fluentd_enabled = False
    node_exporter_install_method = "snap"
    firewall_policy = "reject"
    cluster_dns_ip = "10.200.0.10"
    node_exporter_listen_address = "9100"
    prometheus_retention_time = "-1d"
    alertmanager_receivers = [{"name": "ops", "type": "pager"}]
    teams = {"shop": {"admins": ["group:shop-admins"]}}
"""
BAD_WORKERS = 'cluster_domain = "other.local"\n'


@dataclass
class Finished:
    code: int
    output: str


def _project(root: Path, all_py: str, workers_py: str | None = None) -> Path:
    (root / "group_data").mkdir(parents=True)
    (root / "inv.py").write_text(textwrap.dedent(INVENTORY))
    (root / "group_data" / "all.py").write_text(textwrap.dedent(all_py))
    if workers_py:
        (root / "group_data" / "workers.py").write_text(workers_py)
    return root / "inv.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    bad = _project(tmp_path_factory.mktemp("bad"), BAD_ALL, BAD_WORKERS)
    good = _project(tmp_path_factory.mktemp("good"), "fluentd_enabled = False\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPECTRA_")}
    env["SPECTRA_LAB_DIR"] = str(tmp_path_factory.mktemp("no-lab"))
    env["PYINFRA_PROGRESS"] = "off"
    commands = {
        "validate_bad": [str(BIN / "spectra"), "validate", str(bad)],
        "validate_good": [str(BIN / "spectra"), "validate", str(good)],
        "pyinfra_bad": [str(BIN / "pyinfra"), "-y", str(bad), "deploys/node.py"],
        "pyinfra_data": [str(BIN / "pyinfra"), "-y", str(good), "deploys/cluster.py", "--data", "kubelet_port=6443"],
    }
    processes = {
        name: subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, command in commands.items()
    }
    return {name: Finished(p.wait(timeout=120), p.communicate()[0]) for name, p in processes.items()}


def test_validate_names_each_bad_value_where_it_was_set(runs: dict[str, Finished]) -> None:
    result = runs["validate_bad"]
    assert result.code == 2, result.output
    lines = result.output.splitlines()
    expected = [
        "group_data/all.py: node_exporter_install_method: 'snap' is not one of 'upstream', 'package'",
        "group_data/all.py: firewall_policy: 'reject' is not one of 'drop', 'accept'",
        "cluster settings: cluster_dns_ip='10.200.0.10': must be inside cluster_service_cidr (10.96.0.0/12)",
        "node_exporter: node_exporter_listen_address: '9100' is not host:port",
        "inventory: cluster_domain: a cluster-wide setting must be the same on every host",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, result.output)
    # an addon's setting: the key, what is wrong, the module that checks it and the file that set it
    (retention,) = [line for line in lines if "prometheus_retention_time='-1d'" in line]
    assert "checked by deploys/components/prometheus.py; set in " in retention and "all.py" in retention
    assert any("unknown receiver type 'pager'" in line and "all.py" in line for line in lines), result.output
    assert "nothing was run" in result.output


def test_validate_stops_on_a_team_without_namespace(runs: dict[str, Finished]) -> None:
    result = runs["validate_bad"]
    (line,) = [line for line in result.output.splitlines() if "teams['shop'].namespaces" in line]
    assert "a team needs at least one namespace" in line, line
    assert "checked by deploys/components/tenancy.py; set in " in line and "all.py" in line, line
    assert result.code == 2 and "nothing was run" in result.output


def test_validate_passes_good_settings(runs: dict[str, Finished]) -> None:
    assert runs["validate_good"].code == 0, runs["validate_good"].output


def test_plain_pyinfra_refuses_the_same_values_before_any_operation(runs: dict[str, Finished]) -> None:
    result = runs["pyinfra_bad"]
    assert result.code != 0, result.output
    assert "invalid settings" in result.output
    for text in ("node_exporter_install_method='snap'", "firewall_policy='reject'", "cluster_dns_ip='10.200.0.10'"):
        assert text in result.output
    assert "--> Beginning operation run" not in result.output
    assert "Starting operation" not in result.output


def test_plain_pyinfra_refuses_a_port_clash_from_the_command_line(runs: dict[str, Finished]) -> None:
    result = runs["pyinfra_data"]
    assert result.code != 0, result.output
    assert "kubelet_port=6443: the same port as apiserver_port" in result.output
    assert "--> Beginning operation run" not in result.output


def test_every_setting_has_one_owner() -> None:
    settings.owners.cache_clear()
    owners = settings.owners()
    for key in cluster_settings.DEFAULTS:
        assert owners[key].module == "spectra.cluster_settings"
    assert owners["node_exporter_listen_address"].module == "deploys.components.node_exporter"


def test_a_second_owner_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cluster_settings.DEFAULTS, "firewall_policy", "drop")
    settings.owners.cache_clear()
    try:
        with pytest.raises(settings.SettingsError, match="firewall_policy is declared by"):
            settings.owners()
    finally:
        monkeypatch.undo()
        settings.owners.cache_clear()


def test_cluster_settings_checks() -> None:
    good = dict(cluster_settings.DEFAULTS)
    assert cluster_settings.check(good) == []
    bad = {**good, "pod_network_cidr": "10.96.0.0/16", "apiserver_local_address": "localhost:6443"}
    problems = cluster_settings.check(bad)
    assert any(problem.startswith("pod_network_cidr='10.96.0.0/16': overlaps") for problem in problems)
    assert any(problem.startswith("apiserver_local_address='localhost:6443'") for problem in problems)
    assert cluster_settings.kubeconfig_server(good) == "https://127.0.0.1:6443"
    assert cluster_settings.kubeconfig_server({"apiserver_local_address": "[::1]:7443"}) == "https://[::1]:7443"
