"""group_data precedence as group_data/README.md documents it, shown by `pyinfra INV debug-inventory`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent

INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group

    _records = [
        HostRecord(
            "h1",
            {"ssh_hostname": "192.0.2.1", "host_key": "host", "cli_key": "host"},
            roles=("control_plane", "etcd"),
            zone="z-a",
            region="r1",
            env="prod",
            extra_groups=("type_big",),
        ),
        HostRecord("h2", {"ssh_hostname": "192.0.2.2"}, roles=("workers",), zone="z-b", region="r1", env="prod"),
    ]
    globals().update(build_groups(_records, inventory_group=file_group(__file__)))
"""

# Each file sets every key its level may win, with its own name as the value.
LEVELS = ["all", "inv", "env_prod", "region_r1", "az_z_a", "type_big", "control_plane", "etcd"]
KEYS = {level: LEVELS[: index + 1] for index, level in enumerate(LEVELS)}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("precedence")
    _write(root / "inventories" / "inv.py", INVENTORY)
    for level in LEVELS:
        keys = [f"{key}_key" for key, levels in KEYS.items() if level in levels]
        keys += ["host_key", "cli_key"]
        body = "".join(f"{key} = {level!r}\n" for key in keys)
        _write(root / "group_data" / f"{level}.py", f"import os\n\n{body}")  # imports are not data
    _write(
        root / "group_data" / "all.py",
        "dir_key = 'cwd'\nall_key = 'all'\n" + "".join(f"{level}_key = 'all'\n" for level in LEVELS[1:]),
    )
    _write(root / "inventories" / "group_data" / "all.py", "dir_key = 'inventory dir'\nextra_key = 'inventory dir'\n")
    _write(root / "extra" / "all.py", "extra_key = '--group-data'\n")
    command = [
        str(BIN / "pyinfra"),
        "--group-data",
        str(root / "extra"),
        "--data",
        "cli_key=cli",
        "inventories/inv.py",
        "debug-inventory",
        "--json",
    ]
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {host["name"]: host for host in json.loads(proc.stdout)}


def test_group_order(hosts: dict[str, dict[str, Any]]) -> None:
    assert hosts["h1"]["groups"] == ["inv", "env_prod", "region_r1", "az_z_a", "type_big", "control_plane", "etcd"]
    assert hosts["h2"]["groups"] == ["inv", "env_prod", "region_r1", "az_z_b", "workers"]


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_beats_the_ones_before(hosts: dict[str, dict[str, Any]], level: str) -> None:
    """`<level>_key` is set by `level` and every level before it: `level` must win."""
    assert hosts["h1"]["data"][f"{level}_key"] == level


def test_host_data_beats_groups_and_cli_beats_host(hosts: dict[str, dict[str, Any]]) -> None:
    assert hosts["h1"]["data"]["host_key"] == "host"
    assert hosts["h1"]["data"]["cli_key"] == "cli"
    assert hosts["h2"]["data"]["cli_key"] == "cli"


def test_group_data_directories(hosts: dict[str, dict[str, Any]]) -> None:
    data = hosts["h2"]["data"]
    assert data["dir_key"] == "inventory dir"  # inventories/group_data after ./group_data
    assert data["extra_key"] == "--group-data"  # --group-data last
    assert "os" not in data  # imported names are not data
    assert data["env_prod_key"] == "env_prod" and data["az_z_a_key"] == "region_r1"  # h2 is not in az_z_a
