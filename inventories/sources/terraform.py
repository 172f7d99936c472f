"""Hosts from Terraform outputs, for GCP, Azure, bare-metal providers or anything Terraform creates.

Output contract: one output (default name ``spectra_inventory``) whose value is::

    {
      "cloud": "gcp",                 # optional, host data `cloud`
      "env": "prod",                  # optional, group env_<env>
      "region": "europe-west1",       # optional, default region of every host
      "ssh_user": "debian",           # optional, default ssh_user (default: root)
      "data": {"ssh_port": 22},       # optional, host data for every host
      "hosts": [                      # required: a list, or an object keyed by host name
        {
          "name": "cp-1",             # required (unless hosts is an object)
          "address": "10.10.0.5",     # required: what pyinfra connects to (ssh_hostname)
          "roles": ["control_plane", "etcd"],   # list or "control_plane,etcd"
          "zone": "europe-west1-b",   # group az_europe_west1_b
          "region": "europe-west1",   # optional, overrides the top-level region
          "ssh_user": "debian",       # optional
          "data": {"disk": "/dev/sdb"}          # optional extra host data
        }
      ]
    }

In Terraform::

    output "spectra_inventory" {
      value = {
        cloud = "gcp"
        hosts = [for vm in google_compute_instance.node : {
          name = vm.name, address = vm.network_interface[0].network_ip,
          roles = split(",", vm.labels["roles"]), zone = vm.zone }]
      }
    }

Read it from a saved file (``terraform output -json > outputs.json``, or
``terraform output -json spectra_inventory``, which prints only the value) or by running
``terraform -chdir=DIR output -json``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import InventoryError

from inventories.grouping import HostRecord

DEFAULT_OUTPUT = "spectra_inventory"
HOST_FIELDS = {"name", "address", "roles", "zone", "region", "ssh_user", "data"}


def run_terraform_output(directory: str | Path, terraform: str = "terraform", timeout: float = 120) -> Any:
    """``terraform -chdir=DIR output -json``, parsed."""
    command = [terraform, f"-chdir={directory}", "output", "-json"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise InventoryError(f"cannot run {terraform!r}: not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise InventoryError(f"`{' '.join(command)}` took longer than {timeout}s") from None
    if result.returncode != 0:
        raise InventoryError(f"`{' '.join(command)}` failed ({result.returncode}): {result.stderr.strip()}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"`{' '.join(command)}` did not print JSON: {exc}") from exc


def read_output_file(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(f"Terraform output file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InventoryError(f"cannot read Terraform output file {path}: {exc}") from exc


def inventory_value(outputs: Any, output_name: str = DEFAULT_OUTPUT, source: str = "outputs") -> dict[str, Any]:
    """The inventory value from all outputs (``{name: {"value": ...}}``) or from the bare value."""
    if not isinstance(outputs, dict):
        raise InventoryError(f"{source}: expected a JSON object")
    if "hosts" in outputs:
        return outputs
    if output_name not in outputs:
        available = ", ".join(sorted(outputs)) or "none"
        raise InventoryError(f"{source}: no output {output_name!r} (outputs: {available})")
    entry = outputs[output_name]
    value = entry.get("value") if isinstance(entry, dict) and "value" in entry else entry
    if not isinstance(value, dict) or "hosts" not in value:
        raise InventoryError(f"{source}: output {output_name!r} must be an object with a `hosts` list")
    return value


def _host_entries(value: dict[str, Any], source: str) -> list[dict[str, Any]]:
    hosts = value["hosts"]
    if isinstance(hosts, dict):
        entries = []
        for name, entry in hosts.items():
            if not isinstance(entry, dict):
                raise InventoryError(f"{source}: host {name!r} must be an object")
            entries.append({"name": name, **entry})
        return entries
    if isinstance(hosts, list) and all(isinstance(entry, dict) for entry in hosts):
        return hosts
    raise InventoryError(f"{source}: `hosts` must be a list of objects or an object of objects")


def terraform_records(value: dict[str, Any], source: str = "terraform output") -> list[HostRecord]:
    """Host records from the contract described in this module's docstring."""
    common = value.get("data") or {}
    if not isinstance(common, dict):
        raise InventoryError(f"{source}: `data` must be an object")
    records = []
    for index, entry in enumerate(_host_entries(value, source)):
        label = entry.get("name") or f"#{index + 1}"
        unknown = set(entry) - HOST_FIELDS
        if unknown:
            raise InventoryError(
                f"{source}: host {label}: unknown field(s) {', '.join(sorted(unknown))}; "
                "put extra host data under `data`"
            )
        if not entry.get("name") or not entry.get("address"):
            raise InventoryError(f"{source}: host {label} needs `name` and `address`")
        extra = entry.get("data") or {}
        if not isinstance(extra, dict):
            raise InventoryError(f"{source}: host {label}: `data` must be an object")
        data: dict[str, Any] = {
            "ssh_hostname": str(entry["address"]),
            "ssh_user": entry.get("ssh_user") or value.get("ssh_user") or "root",
        }
        if value.get("cloud"):
            data["cloud"] = str(value["cloud"])
        data.update(common)
        data.update(extra)
        if data["ssh_user"] != "root":
            data.setdefault("_sudo", True)
        roles = entry.get("roles") or ()
        records.append(
            HostRecord(
                name=str(entry["name"]),
                data=data,
                roles=roles if isinstance(roles, str) else tuple(str(role) for role in roles),
                zone=str(entry["zone"]) if entry.get("zone") else None,
                region=str(entry.get("region") or value.get("region") or "") or None,
                env=str(value["env"]) if value.get("env") else None,
            )
        )
    if not records:
        raise InventoryError(f"{source}: the inventory output lists no hosts")
    return records


def load_terraform_records(
    *,
    output_file: str | Path | None = None,
    directory: str | Path | None = None,
    output_name: str = DEFAULT_OUTPUT,
    terraform: str = "terraform",
) -> list[HostRecord]:
    """Records from a saved output file, or from running ``terraform output -json`` in ``directory``."""
    if output_file:
        outputs = read_output_file(output_file)
        source = str(output_file)
    elif directory:
        outputs = run_terraform_output(directory, terraform=terraform)
        source = f"terraform output in {directory}"
    else:
        raise InventoryError("give a Terraform output file or a Terraform directory")
    return terraform_records(inventory_value(outputs, output_name, source), source)
