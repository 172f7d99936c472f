"""Lab, bare-metal and Terraform inventories: same role and zone groups as EC2."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import InventoryError

from inventories.grouping import build_groups
from inventories.sources.lab import lab_records
from inventories.sources.terraform import (
    inventory_value,
    load_terraform_records,
    terraform_records,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

LAB_STATE = {
    "ssh_key": "/var/lib/spectra-lab/ssh/id_ed25519",
    "mirror_url": "http://198.18.0.1:8080",
    "nodes": [
        {"name": "node1", "address": "198.18.0.11", "roles": ["control_plane", "etcd"], "zone": "lab-a"},
        {"name": "node2", "address": "198.18.0.12", "roles": ["workers"], "zone": "lab-b", "suite": "trixie"},
        {"name": "node3", "address": "198.18.0.13", "roles": ["workers"], "zone": "lab-c", "suite": "bookworm"},
    ],
}

TF_VALUE: dict[str, Any] = {
    "cloud": "gcp",
    "env": "staging",
    "region": "europe-west1",
    "ssh_user": "debian",
    "data": {"ssh_port": 2222},
    "hosts": [
        {
            "name": "gcp-cp-1",
            "address": "10.10.0.5",
            "roles": ["control_plane", "etcd"],
            "zone": "europe-west1-b",
        },
        {
            "name": "gcp-wk-1",
            "address": "10.10.0.6",
            "roles": "workers",
            "zone": "europe-west1-c",
            "ssh_user": "root",
            "data": {"ssh_port": 22},
        },
    ],
}


def _write_lab(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "inventory.json"
    path.write_text(json.dumps(state))
    return path


def _groups_by_name(groups: dict[str, list[tuple[str, dict[str, Any]]]]) -> dict[str, set[str]]:
    return {group: {name for name, _ in members} for group, members in groups.items()}


# Lab


def test_lab_records(tmp_path: Path) -> None:
    groups = build_groups(lab_records(_write_lab(tmp_path, LAB_STATE)), inventory_group="lab")
    names = _groups_by_name(groups)
    assert names["control_plane"] == names["etcd"] == {"node1"}
    assert names["workers"] == {"node2", "node3"}
    assert names["az_lab_a"] == {"node1"} and names["az_lab_c"] == {"node3"}
    assert names["env_lab"] == names["lab"] == {"node1", "node2", "node3"}
    data = dict(groups["workers"])["node2"]
    assert data == {
        "ssh_hostname": "198.18.0.12",
        "ssh_user": "root",
        "ssh_key": "/var/lib/spectra-lab/ssh/id_ed25519",
        "ssh_known_hosts_file": str(tmp_path / "ssh" / "known_hosts"),
        "ssh_strict_host_key_checking": "yes",
        "cloud": "lab",
        "lab_mirror_url": "http://198.18.0.1:8080",
        "lab_suite": "trixie",
        "roles": ["workers"],
        "zone": "lab-b",
        "env": "lab",
    }


@pytest.mark.parametrize("state", [None, {"nodes": []}, {"ssh_key": "k"}])
def test_lab_not_up_is_an_error(tmp_path: Path, state: dict[str, Any] | None) -> None:
    if state is not None:
        _write_lab(tmp_path, state)
    with pytest.raises(InventoryError, match=r"lab is not up: run `python -m lab up`"):
        lab_records(tmp_path / "inventory.json")


def test_lab_inventory_file_through_pyinfra(tmp_path: Path) -> None:
    """inventories/lab.py is a real inventory file: pyinfra loads it and applies group_data/lab.py."""
    lab_dir = tmp_path / "lab"
    _write_lab(lab_dir, {**LAB_STATE, "known_hosts": str(lab_dir / "kh")})
    project = tmp_path / "project"
    (project / "group_data").mkdir(parents=True)
    (project / "group_data" / "lab.py").write_text("ssh_connect_retries = 5\n")
    (project / "group_data" / "env_lab.py").write_text("ssh_connect_retries = 1\nssh_port = 2022\n")
    env = {**os.environ, "SPECTRA_LAB_DIR": str(lab_dir)}
    command = [str(BIN / "pyinfra"), str(REPO / "inventories" / "lab.py"), "debug-inventory", "--json"]
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    hosts = {host["name"]: host for host in json.loads(proc.stdout)}
    assert hosts["node1"]["groups"] == ["lab", "env_lab", "az_lab_a", "control_plane", "etcd"]
    assert hosts["node1"]["data"]["ssh_known_hosts_file"] == str(lab_dir / "kh")
    # env_lab comes after lab in the group order, so it wins
    assert hosts["node1"]["data"]["ssh_connect_retries"] == 1
    assert hosts["node3"]["data"]["ssh_port"] == 2022
    # a lab that is not up: see test_inventory_cli.py::test_lab_not_up


# Bare metal


def test_baremetal_inventory_groups() -> None:
    namespace: dict[str, Any] = {"__file__": str(REPO / "inventories" / "baremetal_dc1.py")}
    exec(compile((REPO / "inventories" / "baremetal_dc1.py").read_text(), "baremetal_dc1.py", "exec"), namespace)
    groups = {key: value for key, value in namespace.items() if isinstance(value, list) and not key.startswith("_")}
    names = {key: {name for name, _ in value} for key, value in groups.items()}
    assert names["control_plane"] == names["etcd"] == {"dc1-cp-1", "dc1-cp-2", "dc1-cp-3"}
    assert names["workers"] == {"dc1-wk-1", "dc1-wk-2", "dc1-wk-3"}
    assert names["monitoring"] == {"dc1-mon-1"}
    assert {"az_dc1_r01", "az_dc1_r02", "az_dc1_r03", "region_dc1", "env_prod", "baremetal_dc1"} <= set(names)
    assert names["az_dc1_r02"] == {"dc1-cp-2", "dc1-wk-2"}


# Terraform


def test_terraform_contract() -> None:
    groups = build_groups(terraform_records(TF_VALUE), inventory_group="terraform")
    names = _groups_by_name(groups)
    assert names["control_plane"] == {"gcp-cp-1"} and names["workers"] == {"gcp-wk-1"}
    assert names["az_europe_west1_b"] == {"gcp-cp-1"} and names["az_europe_west1_c"] == {"gcp-wk-1"}
    assert names["region_europe_west1"] == names["env_staging"] == {"gcp-cp-1", "gcp-wk-1"}
    cp = dict(groups["control_plane"])["gcp-cp-1"]
    assert cp["ssh_hostname"] == "10.10.0.5" and cp["ssh_user"] == "debian" and cp["_sudo"] is True
    assert cp["ssh_port"] == 2222 and cp["cloud"] == "gcp"
    wk = dict(groups["workers"])["gcp-wk-1"]
    assert wk["ssh_user"] == "root" and "_sudo" not in wk and wk["ssh_port"] == 22


def test_terraform_output_shapes() -> None:
    full = {"spectra_inventory": {"sensitive": False, "type": ["object", {}], "value": TF_VALUE}, "other": {}}
    assert inventory_value(full) == TF_VALUE
    assert inventory_value(TF_VALUE) == TF_VALUE  # `terraform output -json spectra_inventory`
    keyed = {**TF_VALUE, "hosts": {"a": {"address": "10.0.0.1", "roles": ["workers"]}}}
    assert [record.name for record in terraform_records(keyed)] == ["a"]


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"other": {"value": 1}}, "no output 'spectra_inventory' \\(outputs: other\\)"),
        ({"spectra_inventory": {"value": []}}, "must be an object with a `hosts` list"),
        ({"hosts": []}, "lists no hosts"),
        ({"hosts": [{"name": "a"}]}, "needs `name` and `address`"),
        ({"hosts": [{"name": "a", "address": "x", "rol": "workers"}]}, "unknown field\\(s\\) rol"),
    ],
)
def test_terraform_contract_errors(outputs: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        terraform_records(inventory_value(outputs, source="fixture"), "fixture")


def test_terraform_saved_file(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"spectra_inventory": {"value": TF_VALUE}}))
    assert [record.name for record in load_terraform_records(output_file=path)] == ["gcp-cp-1", "gcp-wk-1"]
    with pytest.raises(InventoryError, match="does not exist"):
        load_terraform_records(output_file=tmp_path / "missing.json")


def test_terraform_command(tmp_path: Path) -> None:
    """terraform is not installed here: this unit test puts a stand-in script named `terraform` on a
    private PATH to check the command line we run and how its output and failures are handled."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "terraform"
    (tmp_path / "outputs.json").write_text(json.dumps({"spectra_inventory": {"value": TF_VALUE}}))
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        f'if [ "$1" = "-chdir={tmp_path}/broken" ]; then echo "No outputs found" >&2; exit 1; fi\n'
        f"cat {tmp_path}/outputs.json\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        records = load_terraform_records(directory=tmp_path / "infra")
        assert [record.name for record in records] == ["gcp-cp-1", "gcp-wk-1"]
        assert (tmp_path / "args").read_text().split() == [f"-chdir={tmp_path}/infra", "output", "-json"]
        with pytest.raises(InventoryError, match="failed \\(1\\): No outputs found"):
            load_terraform_records(directory=tmp_path / "broken")
    with pytest.raises(InventoryError, match="not found on PATH"):
        load_terraform_records(directory=tmp_path, terraform=str(tmp_path / "no-terraform"))
