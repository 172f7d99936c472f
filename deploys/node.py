"""Turn every host of the inventory into a Kubernetes-ready, monitored, hardened node.

    pyinfra -y inventories/<where>.py deploys/node.py      (or: spectra deploy ... deploys/node.py)

Each component is one @deploy with its own settings (data_defaults, documented in its module) and is
switched by its own data flag, `<component>_enabled` (hardening: one flag per concern).
Order matters: OS prerequisites first (apt lists, kernel features, sysctls), hardening before the
services it protects, the container runtime before the log agent that reads container logs.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file by path: make the repository importable (deploys/, facts/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyinfra import host  # noqa: E402
from pyinfra.facts.deb import DebPackages  # noqa: E402

from deploys import pyinfra_speedups  # noqa: E402
from deploys.components import (  # noqa: E402
    audit,
    auto_updates,
    file_permissions,
    firewall,
    hardening_ssh,
    hardening_sysctl,
)
from deploys.components.container_runtime import container_runtime  # noqa: E402
from deploys.components.container_runtime import fact_requests as container_runtime_facts  # noqa: E402
from deploys.components.fluentd import fluentd  # noqa: E402
from deploys.components.node_exporter import fact_requests as node_exporter_facts  # noqa: E402
from deploys.components.node_exporter import node_exporter  # noqa: E402
from deploys.components.os_prerequisites import fact_requests as os_prerequisites_facts  # noqa: E402
from deploys.components.os_prerequisites import os_prerequisites  # noqa: E402
from deploys.prepare import prepared_facts  # noqa: E402
from facts.cgroup import CgroupVersion  # noqa: E402
from facts.platform import Platform  # noqa: E402


def enabled(flag: str) -> bool:
    # Every component's own flag defaults to on in its DEFAULTS; this reads group data first.
    return bool(host.data.get(flag, True))


# pyinfra's CLI spends ~9 ms of CPU per operation finding its order in the call stack: same answer, cheaper.
pyinfra_speedups.enable()

# Everything the components decide on (their fact_requests): ONE remote command per host at prepare time,
# kept for the components (deploys.prepare.prepared_facts). Operations use these values while no
# earlier operation of the run changed the host and read again otherwise (deploys.operations.managed.fresh),
# so a no-op run reads nothing while executing.
prepared_facts(
    Platform,
    DebPackages,
    CgroupVersion,
    *hardening_ssh.fact_requests(),
    *hardening_sysctl.fact_requests(),
    *firewall.fact_requests(),
    *audit.fact_requests(),
    *auto_updates.fact_requests(),
    *file_permissions.fact_requests(),
    *os_prerequisites_facts(),
    *container_runtime_facts(),
    *node_exporter_facts(),
)

if enabled("os_prerequisites_enabled"):
    os_prerequisites()

# Hardening, one concern per component; each reads its own flag inside (e.g. firewall_enabled).
hardening_ssh.ssh_hardening()
hardening_sysctl.sysctl_hardening()
firewall.firewall()
audit.audit_rules()
auto_updates.auto_updates()

if enabled("container_runtime_enabled"):
    container_runtime()

if enabled("node_exporter_enabled"):
    node_exporter()

if enabled("fluentd_enabled"):
    fluentd()

# Last: packages and users added above create files (e.g. /etc/shadow- from useradd) that it tightens.
file_permissions.file_permissions()
