"""Hosts of the local lab, read from the state file the lab writes (``$SPECTRA_LAB_DIR/inventory.json``).

The file looks like::

    {"ssh_key": "/var/lib/spectra-lab/ssh/id_ed25519",
     "known_hosts": "/var/lib/spectra-lab/ssh/known_hosts",      (optional)
     "mirror_url": "http://198.18.0.1:8080",
     "nodes": [{"name": "node1", "address": "198.18.0.11", "roles": ["control_plane", "etcd"],
                "zone": "lab-a", "suite": "bookworm"}, ...]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import InventoryError

from inventories.grouping import HostRecord

DEFAULT_LAB_DIR = "/var/lib/spectra-lab"
NOT_UP = "lab is not up: run `python -m lab up`"


def lab_dir() -> Path:
    return Path(os.environ.get("SPECTRA_LAB_DIR") or DEFAULT_LAB_DIR)


def load_lab_state(state_file: Path | None = None) -> dict[str, Any]:
    path = state_file or lab_dir() / "inventory.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{NOT_UP} ({path} does not exist)") from None
    except OSError as exc:
        raise InventoryError(f"cannot read lab state {path}: {exc}") from exc
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"lab state {path} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise InventoryError(f"lab state {path} must be a JSON object")
    nodes = state.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise InventoryError(f"{NOT_UP} ({path} lists no nodes)")
    return state


def lab_records(state_file: Path | None = None) -> list[HostRecord]:
    """One record per lab node, connected as root with strict host key checking."""
    directory = state_file.parent if state_file else lab_dir()
    path = state_file or directory / "inventory.json"
    state = load_lab_state(path)
    ssh_key = state.get("ssh_key") or str(directory / "ssh" / "id_ed25519")
    known_hosts = state.get("known_hosts") or str(directory / "ssh" / "known_hosts")
    mirror_url = state.get("mirror_url")

    records = []
    for index, node in enumerate(state["nodes"]):
        if not isinstance(node, dict) or not node.get("name") or not node.get("address"):
            raise InventoryError(f"lab state {path}: node #{index + 1} needs a name and an address")
        data: dict[str, Any] = {
            "ssh_hostname": str(node["address"]),
            "ssh_user": "root",
            "ssh_key": str(ssh_key),
            "ssh_known_hosts_file": str(known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "cloud": "lab",
        }
        if mirror_url:
            data["lab_mirror_url"] = str(mirror_url)
        if node.get("suite"):
            data["lab_suite"] = str(node["suite"])
        records.append(
            HostRecord(
                name=str(node["name"]),
                data=data,
                roles=tuple(node.get("roles") or ()),
                zone=str(node["zone"]) if node.get("zone") else None,
                env="lab",
            )
        )
    return records
