"""Node services: the units a node runs, and what listens beyond loopback (ports from their owners)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compliance.listeners import Listener, expected_listeners, exposed_listeners
from compliance.model import Check, Outcome, check, failed, not_applicable, passed
from compliance.probe import Probe
from facts.systemd import UnitState

SECTION = "services"
SECTION_TITLE = "Node services"

# The units this module's checks read, asked for together (one systemctl call per host).
UNITS = (
    "containerd.service", "node_exporter.service", "chrony.service", "ssh.service", "nftables.service",
    "fluentd.service", "kubelet.service",
)  # fmt: skip

# Enabled enough: "static" units have no [Install] section and start as dependencies.
ENABLED_STATES = ("enabled", "enabled-runtime", "static", "alias")


def unit_state(probe: Probe, name: str) -> UnitState | None:
    return probe.units((*UNITS, name))[name]


def unit_outcome(name: str, state: UnitState | None) -> Outcome:
    """Active now (not merely activating: a crash-looping unit is) and started at boot."""
    if state is None:
        return failed(f"{name} is not installed")
    problems = []
    if state["active"] != "active":
        problems.append(f"{name} is {state['active']}")
    if state["enabled"] not in ENABLED_STATES:
        problems.append(f"{name} is {state['enabled'] or 'not enabled'} at boot")
    return failed("; ".join(problems)) if problems else passed(f"{name} active, {state['enabled']}")


@dataclass(frozen=True, eq=False)
class ActiveUnit:
    unit: str

    def __call__(self, probe: Probe) -> Outcome:
        return unit_outcome(self.unit, unit_state(probe, self.unit))


@check(
    id="SPX-SVC-005",
    section=SECTION,
    title="nftables is active and enabled, table inet spectra is loaded with policy drop",
    rationale="the node firewall must be in force now and after a reboot",
    fix="converge firewall (deploys/components/firewall.py); `nft list table inet spectra`",
)
def firewall_loaded(probe: Probe) -> Outcome:
    outcome = unit_outcome("nftables.service", unit_state(probe, "nftables.service"))
    if outcome.status == "fail":
        return outcome
    table = str(probe.context.setting("firewall_table"))
    # No fact reads the ruleset: its chains' policies are matched here.
    ruleset = probe.run(f"nft list table inet {shlex.quote(table)}")
    if ruleset.rc != 0:
        return failed(f"nftables table inet {table} is not loaded: {ruleset.stderr.strip()[:200]}")
    if "policy drop" not in ruleset.stdout:
        return failed(f"table inet {table} has no chain with policy drop")
    return passed(f"{outcome.reason}; table inet {table} loaded, policy drop")


@check(
    id="SPX-SVC-006",
    section=SECTION,
    title="The Fluentd log agent (fluent-package) is installed, active and enabled",
    rationale="container and kubelet logs must leave the node for incident response",
    fix="converge fluentd with fluentd_enabled true and its repository reachable",
)
def fluentd_running(probe: Probe) -> Outcome:
    if not probe.installed("fluent-package"):
        if not probe.context.setting("fluentd_enabled"):
            return not_applicable("fluent-package is not installed and fluentd_enabled is false for this host")
        return failed("fluentd_enabled is true for this host but fluent-package is not installed")
    return unit_outcome("fluentd.service", unit_state(probe, "fluentd.service"))


NO_KUBELET = "kubelet is not installed on this host (no kubelet.service)"


@check(
    id="SPX-SVC-007",
    section=SECTION,
    title="kubelet is active and enabled",
    rationale="the node agent of Kubernetes",
    fix="bootstrap the node into the cluster; `journalctl -u kubelet`",
)
def kubelet_running(probe: Probe) -> Outcome:
    state = unit_state(probe, "kubelet.service")
    if state is None:
        return not_applicable(NO_KUBELET)
    return unit_outcome("kubelet.service", state)


@check(
    id="SPX-SVC-010",
    section=SECTION,
    title="Only expected services listen beyond loopback (ssh, node_exporter; kubelet, apiserver, etcd by role)",
    rationale="every other exposed listener is attack surface the firewall alone should not have to hide",
    fix="stop the process holding the port (`ss -tulnp` names it) or bind it to 127.0.0.1",
)
def only_expected_listeners(probe: Probe) -> Outcome:
    allowed = expected_listeners(probe.context)
    exposed = exposed_listeners(probe.listeners(), allowed)
    if exposed:
        return failed(f"also listening beyond loopback: {', '.join(str(item) for item in exposed)}")
    return passed(f"beyond loopback only tcp {', '.join(str(port) for port in allowed)}")


def evaluate_port_owners(listeners: Iterable[Listener], owners: Mapping[int, str]) -> Outcome:
    listeners = list(listeners)
    problems = []
    for port, program in owners.items():
        # beyond loopback: 127.0.0.1:6443 is the node-local balancer's on a control plane, by design
        holders = [item for item in listeners if item.protocol == "tcp" and item.port == port and not item.loopback]
        if not holders:
            problems.append(f"nothing listens on {port}/tcp (want {program})")
            continue
        for item in holders:
            if not item.process:
                problems.append(f"cannot tell which process holds {item} (ss -p needs root)")
            elif not item.held_by(program):
                problems.append(f"{item} is held by {item.process}, not {program}")
    if problems:
        return failed("; ".join(problems))
    return passed(", ".join(f"{port}/tcp: {program}" for port, program in owners.items()))


@check(
    id="SPX-SVC-011",
    section=SECTION,
    title="Each expected port is held by its own program (sshd, node_exporter, kubelet, ... on their configured ports)",
    rationale="an expected port taken by another program is an impostor or a misconfiguration",
    fix="find the process with `ss -tlnp` and stop it; restart the service that owns the port",
)
def expected_port_owners(probe: Probe) -> Outcome:
    return evaluate_port_owners(probe.listeners(), expected_listeners(probe.context))


CHECKS: tuple[Check, ...] = (
    Check(
        id="SPX-SVC-001",
        section=SECTION,
        title="containerd is active and enabled",
        rationale="the container runtime kubelet needs",
        fix="converge container_runtime; `journalctl -u containerd` for why it stopped",
        evaluate=ActiveUnit("containerd.service"),
    ),
    Check(
        id="SPX-SVC-002",
        section=SECTION,
        title="node_exporter is active and enabled",
        rationale="host metrics for monitoring and alerting",
        fix="converge node_exporter; `journalctl -u node_exporter`",
        evaluate=ActiveUnit("node_exporter.service"),
    ),
    Check(
        id="SPX-SVC-003",
        section=SECTION,
        title="chrony is active and enabled",
        rationale="certificates, etcd and logs need correct time",
        fix="converge os_prerequisites; `chronyc tracking`",
        evaluate=ActiveUnit("chrony.service"),
    ),
    Check(
        id="SPX-SVC-004",
        section=SECTION,
        title="ssh is active and enabled",
        rationale="the only way in for administration and the deploys",
        fix="systemctl enable --now ssh (from a console)",
        evaluate=ActiveUnit("ssh.service"),
    ),
    firewall_loaded,
    fluentd_running,
    kubelet_running,
    only_expected_listeners,
    expected_port_owners,
)
