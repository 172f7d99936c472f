"""Turn every host of the inventory into a Kubernetes-ready, monitored, hardened node.

    pyinfra -y inventories/<where>.py deploys/node.py

Each component is one @deploy with its own settings (data_defaults) and is switched by a data
flag (``<component>_enabled``, default on unless said otherwise).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# pyinfra runs this file by path: make the repository importable (deploys/, facts/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyinfra import host  # noqa: E402

from deploys.components.container_runtime import container_runtime  # noqa: E402
from deploys.components.node_exporter import node_exporter  # noqa: E402
from deploys.components.os_prerequisites import os_prerequisites  # noqa: E402


def enabled(flag: str, default: bool = True) -> bool:
    return bool(host.data.get(flag, default))


if enabled("os_prerequisites_enabled"):
    os_prerequisites()

# --- hardening (owned by the hardening engineer) ---------------------------------------------------
# Each concern is its own component and reads its own *_enabled flag; "hardening_enabled" switches
# them all. A module not written yet is skipped.
HARDENING = [
    ("deploys.components.hardening_ssh", "ssh_hardening"),
    ("deploys.components.hardening_sysctl", "sysctl_hardening"),
    ("deploys.components.firewall", "firewall"),
    ("deploys.components.audit", "audit_rules"),
    ("deploys.components.auto_updates", "auto_updates"),
    ("deploys.components.file_permissions", "file_permissions"),
]
if enabled("hardening_enabled"):
    for module_name, function_name in HARDENING:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        getattr(module, function_name)()

if enabled("container_runtime_enabled"):
    container_runtime()

if enabled("node_exporter_enabled"):
    node_exporter()

# --- fluentd (owned by the hardening/fluentd engineer): deploys/components/fluentd.py, fluentd() ---
try:
    fluentd_module = importlib.import_module("deploys.components.fluentd")
except ModuleNotFoundError:
    fluentd_module = None  # type: ignore[assignment]
if fluentd_module is not None and enabled("fluentd_enabled"):
    fluentd_module.fluentd()
