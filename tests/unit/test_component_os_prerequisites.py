from __future__ import annotations

import re
from typing import Any

import pytest
from pyinfra.api import DeployError

from deploys.components.os_prerequisites import COMPONENT, os_prerequisites
from deploys.settings import owners
from facts.files import FileStates
from facts.kernel import KernelFeatures
from facts.platform import Platform
from facts.swap import Swap
from facts.sysctl import SysctlValues
from facts.systemd import SystemdUnits
from tests.unit.component_facts import BOOKWORM, RUNNING, files_from_uploads, fresh
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "vm.overcommit_memory": "1",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "fs.inotify.max_user_instances": "8192",
    "fs.inotify.max_user_watches": "524288",
}


def test_fresh_node_loadable_modules() -> None:
    result = run_deploy(os_prerequisites, facts=fresh())
    assert result.op("Load loadable kernel modules").commands == ["modprobe -a overlay br_netfilter"]
    assert result.uploads["/etc/modules-load.d/.kubernetes.conf.spectra-new"].splitlines()[-2:] == [
        "br_netfilter",
        "overlay",
    ]
    sysctl_file = result.uploads["/etc/sysctl.d/.90-kubernetes.conf.spectra-new"]
    assert "net.ipv4.ip_forward = 1" in sysctl_file
    assert "net.bridge.bridge-nf-call-iptables = 1" in sysctl_file
    applied = result.op("Apply Kubernetes sysctls").commands[0]
    assert applied.startswith(
        "sysctl -q -w fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 kernel.panic=10 "
        "kernel.panic_on_oops=1 net.bridge"
    )
    assert result.op("Disable swap").commands[0] == "swapoff -a"
    assert "sed -i.spectra-bak" in result.op("Disable swap").commands[1]
    install = result.op("Install OS packages").commands[-1]
    assert install.endswith("install --no-install-recommends procps curl ca-certificates chrony")
    chrony = result.uploads["/etc/chrony/.chrony.conf.spectra-new"]
    assert "pool 2.debian.pool.ntp.org iburst" in chrony
    assert result.op("chrony running").commands == [
        "systemctl start chrony.service",
        "systemctl enable chrony.service",
    ]


def test_monolithic_kernel_builtin_modules_no_modprobe_no_file() -> None:
    facts = fresh({KernelFeatures: {"overlay": "builtin", "br_netfilter": "builtin"}})
    result = run_deploy(os_prerequisites, facts=facts)
    assert result.op("Load loadable kernel modules").commands == []
    assert not result.has_op("Persist kernel modules")
    assert not any("modules-load.d" in path for path in result.uploads)


def test_missing_module_refused() -> None:
    facts = fresh({KernelFeatures: {"overlay": "builtin", "br_netfilter": "missing"}})
    with pytest.raises(DeployError, match="kernel features missing.*br_netfilter"):
        run_deploy(os_prerequisites, facts=facts)


@pytest.mark.parametrize(("os_id", "version"), [("debian", "11"), ("ubuntu", "22.04"), (None, None)])
def test_unsupported_os_refused(os_id: str | None, version: str | None) -> None:
    facts = fresh({Platform: {**BOOKWORM, "id": os_id, "version_id": version, "pretty_name": None}})
    with pytest.raises(DeployError, match="unsupported OS.*supported: debian 12/13"):
        run_deploy(os_prerequisites, facts=facts)


def test_debian_13_accepted() -> None:
    facts = fresh({Platform: {**BOOKWORM, "version_id": "13", "codename": "trixie"}})
    run_deploy(os_prerequisites, facts=facts)


def test_chrony_servers_from_data() -> None:
    result = run_deploy(
        os_prerequisites,
        facts=fresh(),
        data={"chrony_servers": ["ntp1.example", "10.0.0.1"], "chrony_pools": []},
    )
    chrony = result.uploads["/etc/chrony/.chrony.conf.spectra-new"]
    assert "server ntp1.example iburst" in chrony and "server 10.0.0.1 iburst" in chrony
    assert "pool" not in chrony.replace("ntsdumpdir", "")


def test_second_run_is_noop_and_cheap() -> None:
    first = run_deploy(os_prerequisites, facts=fresh())
    facts = fresh(
        {
            KernelFeatures: {"overlay": "loaded", "br_netfilter": "loaded"},
            FileStates: files_from_uploads(first.uploads),
            SystemdUnits: {"chrony.service": {"id": "chrony.service", **RUNNING}},
            SysctlValues: SYSCTLS,
            Swap: {"active": [], "fstab": []},
            "deb.DebPackages": {name: ["1"] for name in ["procps", "curl", "ca-certificates", "chrony"]},
        }
    )
    second = run_deploy(os_prerequisites, facts=facts)
    assert second.commands == []
    # loaded modules (from .ko files) stay persisted: the file does not flip between runs
    assert second.has_op("Persist kernel modules")
    assert len(second.fact_reads) <= 8


def test_component_reads_everything_in_one_command() -> None:
    result = run_component(COMPONENT, facts=fresh())
    assert len(result.fact_reads) == 1
    assert result.commands == run_deploy(os_prerequisites, facts=fresh()).commands


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"chrony_servers": [], "chrony_pools": []}, "chrony_enabled needs chrony_servers or chrony_pools"),
        ({"chrony_servers": ["ntp 1.example"]}, "chrony_servers: 'ntp 1.example' is not a hostname or IP address"),
        ({"chrony_pools": ["pool.example\nallow all"]}, "chrony_pools: 'pool.example\\nallow all' is not a"),
        ({"chrony_server_options": "iburst\nallow"}, "chrony_server_options='iburst\\nallow'"),
        ({"chrony_daemon_opts": '-F 1" -x'}, "chrony_daemon_opts='-F 1\" -x'"),
        ({"chrony_sync_in_container": "true"}, "chrony_sync_in_container='true': not one of 'no', 'yes'"),
        ({"kernel_modules": ["overlay", "br_netfilter; reboot"]}, "kernel_modules: 'br_netfilter; reboot' is not"),
        ({"kubernetes_sysctls": {"net.ipv4.ip_forward": "1\nkernel.panic=0"}}, "kubernetes_sysctls['net.ipv4.ip"),
        ({"supported_os": ["debian"]}, "supported_os=['debian']: a mapping"),
    ],
)
def test_bad_settings_refused_before_any_fact_or_operation(data: dict[str, Any], message: str) -> None:
    # no fact is given: reading one before the refusal would fail with MissingFact instead
    with pytest.raises(DeployError, match=re.escape(message)):
        run_component(COMPONENT, facts={}, data=data)


def test_chrony_settings_unchecked_without_chrony() -> None:
    defaults = {key: owner.default for key, owner in owners().items()}
    assert COMPONENT.problems(defaults) == []
    assert COMPONENT.problems({**defaults, "chrony_enabled": False, "chrony_pools": [], "chrony_servers": []}) == []


def test_switched_off_reads_nothing_and_does_nothing() -> None:
    result = run_component(COMPONENT, facts={}, data={"os_prerequisites_enabled": False})
    assert result.fact_reads == [] and result.ops == []
