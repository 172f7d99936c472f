"""Turn every host of the inventory into a Kubernetes-ready, monitored, hardened node.

    pyinfra -y inventories/<where>.py deploys/node.py      (or: spectra deploy ... deploys/node.py)

The components in order; each one's settings, gate and facts are its own (``COMPONENT`` in its module,
see deploys/component.py). Order matters: OS prerequisites first (apt lists, kernel features, sysctls),
hardening before the services it protects, the container runtime before the log agent that reads container
logs, file permissions last (packages and users added above create files it tightens, /etc/shadow- from
useradd).
"""

from __future__ import annotations

from pyinfra.facts.deb import DebPackages

from deploys import pyinfra_speedups
from deploys.component import run
from deploys.components import (
    audit,
    auto_updates,
    certificate_metrics,
    container_runtime,
    file_permissions,
    firewall,
    fluentd,
    hardening_ssh,
    hardening_sysctl,
    node_exporter,
    os_prerequisites,
)
from facts.cgroup import CgroupVersion
from facts.platform import Platform

NODE_COMPONENTS = [
    os_prerequisites.COMPONENT,
    hardening_ssh.COMPONENT,
    hardening_sysctl.COMPONENT,
    firewall.COMPONENT,
    audit.COMPONENT,
    auto_updates.COMPONENT,
    container_runtime.COMPONENT,
    node_exporter.COMPONENT,
    certificate_metrics.COMPONENT,  # after node_exporter: it writes into the textfile directory
    fluentd.COMPONENT,
    file_permissions.COMPONENT,
]

# pyinfra's CLI spends ~9 ms of CPU per operation finding its order in the call stack: same answer, cheaper.
pyinfra_speedups.enable()

# Settings checked, then everything the components decide on read in ONE remote command per host, then the
# components in order (deploys.component.run). Operations use the prepared values while no earlier operation
# of the run changed the host (deploys.operations.managed.fresh), so a no-op run reads nothing while executing.
run(NODE_COMPONENTS, base_facts=[Platform, DebPackages, CgroupVersion])
