"""Sysctl hardening, audit rules, unattended-upgrades and file permissions: facts in, commands out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pyinfra.api import DeployError
from pyinfra.facts.deb import DebPackages

from deploys.components import audit, auto_updates, file_permissions, hardening_sysctl
from deploys.components.audit import audit_rules
from deploys.components.file_permissions import file_permissions as file_permissions_deploy
from deploys.components.hardening_sysctl import sysctl_hardening
from deploys.settings import owners
from facts.config_state import ConfigState
from facts.files import FileStates
from facts.security import AuditSupport
from facts.sysctl import SysctlValues
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

SYSCTL = "/etc/sysctl.d/60-spectra-hardening.conf"
SYSCTL_STAGED = "/etc/sysctl.d/.60-spectra-hardening.conf.spectra-new"
EMPTY: dict[str, dict[str, object]] = {"files": {}, "units": {}}


def sysctl_lines(text: str) -> dict[str, str]:
    return dict(
        (part.strip() for part in line.split("=", 1))  # type: ignore[misc]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    )


def runtime(**overrides: str | None) -> object:
    """SysctlValues as a host reports them: every asked key at its hardened value, unless overridden."""

    def values(keys: list[str], **_: object) -> dict[str, str | None]:
        wanted = sysctl_lines(
            run_deploy(sysctl_hardening, facts={ConfigState: EMPTY, SysctlValues: {}}).uploads[SYSCTL_STAGED]
        )
        return {key: overrides.get(key, wanted.get(key)) for key in keys}

    return values


def test_sysctl_file_keeps_forwarding_and_loads_only_on_change() -> None:
    result = run_deploy(sysctl_hardening, facts={ConfigState: EMPTY, SysctlValues: runtime()})
    values = sysctl_lines(result.uploads[SYSCTL_STAGED])
    assert "net.ipv4.ip_forward" not in values  # forwarding is os_prerequisites' (=1), never touched here
    assert values["net.ipv4.conf.all.rp_filter"] == "2"
    assert values["net.ipv4.conf.all.accept_redirects"] == "0"
    assert values["net.ipv4.conf.all.send_redirects"] == "0"
    assert values["net.ipv4.conf.all.accept_source_route"] == "0"
    assert values["net.ipv4.conf.all.log_martians"] == "1"
    assert values["net.ipv4.tcp_syncookies"] == "1"
    assert values["net.ipv4.icmp_echo_ignore_broadcasts"] == "1"
    assert values["kernel.kptr_restrict"] == "2"
    assert values["kernel.dmesg_restrict"] == "1"
    assert values["fs.protected_symlinks"] == "1"
    assert result.commands[-1] == f"sysctl -e -q -p {SYSCTL}"
    assert result.commands.index(f"mv -f {SYSCTL_STAGED} {SYSCTL}") < len(result.commands) - 1


def test_sysctl_global_switch_and_forwarding_guard() -> None:
    result = run_deploy(
        sysctl_hardening,
        facts={ConfigState: EMPTY, SysctlValues: runtime()},
        data={"hardening_sysctl_global_enabled": False},
    )
    values = sysctl_lines(result.uploads[SYSCTL_STAGED])
    assert not [key for key in values if not key.startswith("net.")]
    with pytest.raises(DeployError, match="Kubernetes needs net.ipv4.ip_forward=1"):
        run_component(hardening_sysctl.COMPONENT, facts={}, data={"hardening_sysctl_extra": {"net.ipv4.ip_forward": 0}})


def converged_file_state() -> dict[str, object]:
    import hashlib

    content = run_deploy(sysctl_hardening, facts={ConfigState: EMPTY, SysctlValues: {}}).uploads[SYSCTL_STAGED]
    return {
        "files": {
            SYSCTL: {
                "type": "file",
                "mode": "644",
                "user": "root",
                "group": "root",
                "sha256": hashlib.sha256(content.encode()).hexdigest(),
            }
        },
        "units": {},
    }


def test_sysctl_noop() -> None:
    result = run_deploy(sysctl_hardening, facts={ConfigState: converged_file_state(), SysctlValues: runtime()})
    assert result.commands == []


def test_sysctl_changed_at_runtime_is_set_back_though_the_file_is_unchanged() -> None:
    result = run_deploy(
        sysctl_hardening,
        facts={
            ConfigState: converged_file_state(),
            # one value changed by hand; one key this kernel does not have (left alone, as sysctl -e does)
            SysctlValues: runtime(**{"net.ipv4.conf.all.accept_redirects": "1", "kernel.sysrq": None}),
        },
    )
    assert result.commands == ["sysctl -q -w net.ipv4.conf.all.accept_redirects=0"]


SUPPORTED = {"container": None, "cap_audit_control": True, "can_load": True, "reason": "ok"}
CONTAINER = {
    "container": "systemd-nspawn",
    "cap_audit_control": True,
    "can_load": False,
    "reason": "inside a systemd-nspawn container",
}
RULES = "/etc/audit/rules.d/60-spectra-kubernetes.rules"
RULES_STAGED = "/etc/audit/rules.d/.60-spectra-kubernetes.rules.spectra-new"


def test_audit_rules_loaded_on_capable_host() -> None:
    result = run_deploy(
        audit_rules,
        facts={
            AuditSupport: SUPPORTED,
            DebPackages: {"auditd": {"1:3.0.9-1"}},
            ConfigState: {"files": {}, "units": {"auditd.service": {"active": "active", "enabled": "enabled"}}},
        },
    )
    rules = result.uploads[RULES_STAGED].splitlines()
    for path in (
        "/etc/kubernetes",
        "/etc/containerd",
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/etc/ssh/sshd_config",
        "/etc/shadow",
        "/etc/sudoers",
        "/var/lib/kubelet/config.yaml",
    ):
        assert any(line.startswith(f"-w {path} -p wa -k ") for line in rules), path
    assert "-w /var/lib/kubelet -p" not in "\n".join(rules)  # not the pod volume churn
    commands = result.commands
    assert commands.index(f"mv -f {RULES_STAGED} {RULES}") < commands.index("augenrules --load")
    assert any(c.startswith("mkdir -p /etc/kubernetes /var/lib/kubelet") for c in commands)


def test_audit_in_container_writes_rules_but_loads_nothing() -> None:
    # packages are read with the rest (one command for every hardening component), then not used here
    result = run_deploy(audit_rules, facts={AuditSupport: CONTAINER, ConfigState: EMPTY, DebPackages: {}})
    assert RULES_STAGED in result.uploads
    assert not any("augenrules" in c or "auditd" in c for c in result.commands)
    assert not result.has_op("Install auditd")


def test_audit_bad_watch_refused() -> None:
    with pytest.raises(DeployError, match="permissions"):
        run_component(
            audit.COMPONENT, facts={}, data={"audit_extra_watches": [{"path": "/x", "permissions": "z", "key": "k"}]}
        )


def test_auto_updates_security_only() -> None:
    result = run_deploy(
        auto_updates.auto_updates,
        facts={DebPackages: {"unattended-upgrades": {"2.9.1"}}, ConfigState: EMPTY},
    )
    text = result.uploads["/etc/apt/apt.conf.d/.52spectra-unattended-upgrades.spectra-new"]
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in text
    patterns = [
        line.strip().strip('";')
        for line in text.split("Origins-Pattern {")[1].split("};")[0].splitlines()
        if line.strip()
    ]
    assert patterns and all("Debian-Security" in pattern for pattern in patterns)
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in text
    assert any(c.startswith("( apt-config -c /etc/apt/apt.conf.d/.52spectra") for c in result.commands)
    periodic = result.uploads["/etc/apt/apt.conf.d/.20auto-upgrades.spectra-new"]
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    reboot = run_deploy(
        auto_updates.auto_updates, facts={DebPackages: {}, ConfigState: EMPTY}, data={"auto_updates_reboot": True}
    )
    assert 'Automatic-Reboot "true"' in reboot.uploads["/etc/apt/apt.conf.d/.52spectra-unattended-upgrades.spectra-new"]


def test_file_permissions_one_fact_and_only_differences() -> None:
    states = {
        "/etc/shadow": {"type": "file", "mode": "644", "user": "root", "group": "root"},
        "/etc/passwd": {"type": "file", "mode": "644", "user": "root", "group": "root"},
        "/etc/cron.d": {"type": "directory", "mode": "755", "user": "root", "group": "root"},
    }
    result = run_deploy(file_permissions_deploy, facts={FileStates: states})
    assert result.commands == [
        "chmod 700 /etc/cron.d",
        "chown root:shadow /etc/shadow",
        "chmod 640 /etc/shadow",
    ]
    assert len(result.fact_reads) == 1 and result.fact_reads[0][1]["sha256"] is False
    assert "/boot/grub/grub.cfg" in result.fact_reads[0][1]["paths"]  # missing paths are skipped, not created


WATCH = {"path": "/etc/x", "permissions": "wa", "key": "x"}


@pytest.mark.parametrize(
    ("component", "data", "message"),
    [
        (
            hardening_sysctl.COMPONENT,
            {"hardening_sysctl_rp_filter": 3},
            "hardening_sysctl_rp_filter=3: not one of 0, 1, 2",
        ),
        (
            hardening_sysctl.COMPONENT,
            {"hardening_sysctl_network": {"net.ipv6.conf.all.forwarding": "0"}},
            "hardening_sysctl_network['net.ipv6.conf.all.forwarding']='0': refused, Kubernetes needs",
        ),
        (
            hardening_sysctl.COMPONENT,
            {"hardening_sysctl_extra": {"kernel.sysrq": "0\nkernel.panic = 0"}},
            "hardening_sysctl_extra['kernel.sysrq']",
        ),
        (hardening_sysctl.COMPONENT, {"hardening_sysctl_extra": {"kernel sysrq": 0}}, "'kernel sysrq' is not a sysctl"),
        (audit.COMPONENT, {"audit_rules_path": "/etc/audit/audit.rules"}, "audit_rules_path='/etc/audit/audit.rules'"),
        (audit.COMPONENT, {"audit_extra_watches": [{**WATCH, "path": "/etc/../x"}]}, "path '/etc/../x' must be"),
        (audit.COMPONENT, {"audit_extra_watches": [{**WATCH, "key": "a key"}]}, "key 'a key' must be a short word"),
        (audit.COMPONENT, {"audit_extra_watches": [WATCH, WATCH]}, "/etc/x listed twice"),
        (audit.COMPONENT, {"audit_extra_watches": ["/etc/x"]}, "'/etc/x' must be a mapping with path"),
        (audit.COMPONENT, {"audit_create_directories": ["var/lib/x"]}, "audit_create_directories: 'var/lib/x'"),
        (auto_updates.COMPONENT, {"auto_updates_reboot_time": "3:30"}, "auto_updates_reboot_time='3:30': HH:MM"),
        (auto_updates.COMPONENT, {"auto_updates_reboot_time": "24:00"}, "auto_updates_reboot_time='24:00'"),
        (auto_updates.COMPONENT, {"auto_updates_origins": ['origin=Debian";']}, "may not contain quotes"),
        (auto_updates.COMPONENT, {"auto_updates_blacklist": ["kubelet\n"]}, "auto_updates_blacklist: 'kubelet\\n'"),
        (auto_updates.COMPONENT, {"auto_updates_origins": []}, "auto_updates_origins=[]: at least one origin"),
        (file_permissions.COMPONENT, {"file_permissions_extra": {"etc/x": ["600", "root", "root"]}}, "'etc/x' is not"),
        (file_permissions.COMPONENT, {"file_permissions_extra": {"/etc/x": ["680", "root", "root"]}}, "octal mode"),
        (file_permissions.COMPONENT, {"file_permissions_extra": {"/etc/x": "600"}}, "file_permissions_extra['/etc/x']"),
        (file_permissions.COMPONENT, {"file_permissions_extra": {"/etc/x": ["600", "root"]}}, "[mode, user, group]"),
        (file_permissions.COMPONENT, {"file_permissions_extra": {"/etc/x": ["600", "Root", "root"]}}, "account names"),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_bad_settings_refused_before_any_fact_or_operation(component: Any, data: dict[str, Any], message: str) -> None:
    # no fact is given: reading one before the refusal would fail with MissingFact instead
    with pytest.raises(DeployError, match=re.escape(message)):
        run_component(component, facts={}, data=data)


COMPONENTS = [hardening_sysctl.COMPONENT, audit.COMPONENT, auto_updates.COMPONENT, file_permissions.COMPONENT]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda component: component.name)
def test_defaults_pass_the_checks_with_no_host(component: Any) -> None:
    """`spectra validate` runs the checks on plain data, with no host and no pyinfra context."""
    defaults = {key: owner.default for key, owner in owners().items()}
    assert component.problems(defaults) == []


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda component: component.name)
def test_switched_off_reads_nothing_and_does_nothing(component: Any) -> None:
    assert component.switch
    result = run_component(component, facts={}, data={component.switch: False})
    assert result.fact_reads == [] and result.ops == []


def test_file_permissions_extra_overrides_the_listed_entry() -> None:
    entries = file_permissions.permission_entries(
        {
            "file_permissions": {"/etc/x": ["0600", "root", "root"]},
            "file_permissions_extra": {"/etc/x": [640, "a", "b"]},
        }
    )
    assert entries == {"/etc/x": ("640", "a", "b")}
