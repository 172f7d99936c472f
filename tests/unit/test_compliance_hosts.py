"""Hosts of an inventory as testinfra targets (ssh_config + context); `spectra comply` refusing bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyinfra.api import Inventory

from compliance.hosts import HostError, context, resolve_hosts, ssh_config
from inventories.grouping import HostRecord, build_groups
from spectra_cli.comply import zone_patterns
from spectra_cli.validation import ValidationResult, select_hosts

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SPECTRA = str(Path(sys.executable).parent / "spectra")


def _inventory(records: list[HostRecord], group_data: dict[str, dict] | None = None) -> Inventory:
    groups = dict(build_groups(records, inventory_group="lab"))
    all_hosts = groups.pop("all")
    group_data = group_data or {}
    return Inventory((all_hosts, {}), **{name: (members, group_data.get(name, {})) for name, members in groups.items()})


RECORDS = [
    HostRecord("node1", {"ssh_hostname": "198.18.4.11", "ssh_user": "root", "ssh_key": "/lab/ssh/id_ed25519",
                         "ssh_known_hosts_file": "/lab/ssh/known_hosts", "ssh_port": 2222},
               roles=("control_plane", "etcd"), zone="lab-a", env="lab"),
    HostRecord("node2", {"ssh_hostname": "198.18.4.12", "ssh_strict_host_key_checking": "accept-new"},
               roles=("workers",), zone="lab-b", env="lab"),
]  # fmt: skip


def test_hosts_resolve_with_connection_data_groups_and_check_context() -> None:
    inventory = _inventory(RECORDS, {"lab": {"fluentd_enabled": False}})
    node1, node2 = resolve_hosts(inventory, ["node1", "node2"])
    assert (node1.hostname, node1.user, node1.port, node1.key, node1.known_hosts) == (
        "198.18.4.11", "root", 2222, "/lab/ssh/id_ed25519", "/lab/ssh/known_hosts"
    )  # fmt: skip
    assert node1.strict_host_key_checking == "yes"  # strict unless the inventory says otherwise
    assert node2.strict_host_key_checking == "accept-new" and node2.user is None and node2.port is None
    assert node1.roles == ["control_plane", "etcd"]
    assert {"az_lab_a", "control_plane", "etcd", "lab", "env_lab"} <= set(node1.groups)
    assert node1.data == {"fluentd_enabled": False, "roles": ["control_plane", "etcd"], "ssh_port": 2222}
    assert context([node1])["hosts"]["node1"]["roles"] == ["control_plane", "etcd"]


def test_ssh_config_has_one_block_per_inventory_name() -> None:
    targets = resolve_hosts(_inventory(RECORDS), ["node1", "node2"])
    text = ssh_config(targets, control_dir="/tmp/run")
    block = text.split("Host node1\n")[1].split("\n\n")[0].splitlines()
    assert [line.strip() for line in block] == [
        "HostName 198.18.4.11", "User root", "Port 2222", "IdentityFile /lab/ssh/id_ed25519", "IdentitiesOnly yes",
        "UserKnownHostsFile /lab/ssh/known_hosts", "StrictHostKeyChecking yes", "BatchMode yes", "LogLevel ERROR",
        "ServerAliveInterval 15", "ControlPath /tmp/run/cm-%C",
    ]  # fmt: skip
    assert "Host node2\n    HostName 198.18.4.12\n    StrictHostKeyChecking accept-new" in text
    assert [host.spec for host in targets] == ["ssh://node1", "ssh://node2"]


def test_proxy_jump_from_the_inventorys_own_ssh_config(tmp_path: Path) -> None:
    config = tmp_path / "bastion.cfg"
    config.write_text("Host 10.0.0.5\n    ProxyJump ec2-user@bastion.example:22\n")
    record = HostRecord("web", {"ssh_hostname": "10.0.0.5", "ssh_config_file": str(config)}, roles=("workers",))
    (target,) = resolve_hosts(_inventory([record]), ["web"])
    assert target.proxy_jump == "ec2-user@bastion.example:22"
    assert "ProxyJump ec2-user@bastion.example:22" in ssh_config([target])


def test_names_ssh_config_cannot_hold_are_refused() -> None:
    with pytest.raises(HostError, match="host names for compliance runs"):
        resolve_hosts(_inventory([HostRecord("@fake/n1", {}, roles=("workers",))]), ["@fake/n1"])
    with pytest.raises(HostError, match="newline"):
        resolve_hosts(_inventory([HostRecord("n1", {"ssh_user": "a\nb"}, roles=("workers",))]), ["n1"])


def test_limit_takes_groups_hosts_and_zone_names() -> None:
    inventory = _inventory(RECORDS)
    assert zone_patterns(["lab-b", "node1", "workers", "az_lab_a", "nomatch"], inventory) == [
        "az_lab_b", "node1", "workers", "az_lab_a", "nomatch"
    ]  # fmt: skip
    result = ValidationResult("inv.py", inventory=inventory)
    assert select_hosts(result, zone_patterns(["lab-b"], inventory)) == ["node2"]


INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group
    _data = {"ssh_hostname": "192.0.2.1", "fluentd_enabled": False}
    _records = [HostRecord("n1", _data, roles=("workers",), zone="z-a")]
    globals().update(build_groups(_records, inventory_group=file_group(__file__)))
"""


def _comply(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "inv.py").write_text(textwrap.dedent(INVENTORY))
    return subprocess.run(
        [SPECTRA, "comply", str(tmp_path / "inv.py"), "--report-dir", str(tmp_path / "r"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_comply_refuses_bad_waivers_and_limits_before_running(tmp_path: Path) -> None:
    waivers = tmp_path / "w.yaml"
    waivers.write_text("- {check: SPX-NOPE-1, group: workers, reason: r, expires: 2030-01-01}\n"
                       "- {check: SPX-OS-001, group: wrokers, reason: r, expires: 2030-01-01}\n")  # fmt: skip
    result = _comply(tmp_path, "--waivers", str(waivers))
    assert result.returncode == 2, result.stderr
    assert "unknown check id 'SPX-NOPE-1'" in result.stderr and "unknown group 'wrokers'" in result.stderr
    assert "nothing was run" in result.stderr and not (tmp_path / "r").exists()

    result = _comply(tmp_path, "--limit", "z-b")
    assert result.returncode == 2 and "'z-b' matches no host or group" in result.stderr
