"""OS prerequisites of a Kubernetes node: supported OS, kernel features, sysctls, swap off, chrony.

Kernel features come from one fact that tells, per module, ``loaded``, ``builtin``, ``loadable``
or ``missing``: only loadable modules are loaded (``modprobe``) and persisted in
/etc/modules-load.d; built-in features (monolithic kernels have no /lib/modules and modprobe fails)
need nothing; a missing one stops the deploy for that host with a clear message.

Lab note: in the lab's container-like nodes /proc/sys is writable; network keys (net.*) belong to
each node, but global keys (kernel.*, vm.*, fs.*) are the one shared kernel's.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.prepare import FactRequest, component_data, prepared_fact, prepared_facts, require, setting
from facts.files import FileStates
from facts.kernel import BUILTIN, LOADABLE, LOADED, MISSING, KernelFeatures
from facts.platform import Platform
from facts.swap import Swap
from facts.sysctl import SysctlValues
from facts.systemd import SystemdUnits, unit_name

DEFAULTS: dict[str, Any] = {
    "os_prerequisites_enabled": True,  # run this component at all
    "supported_os": {"debian": ["12", "13"]},  # os-release ID -> VERSION_IDs this toolkit is verified on
    "os_packages": ["procps", "curl", "ca-certificates"],  # base tools the other components rely on
    "kernel_modules": ["overlay", "br_netfilter"],  # kernel features Kubernetes needs
    "kernel_modules_file": "/etc/modules-load.d/kubernetes.conf",  # where loadable modules are persisted
    "kubernetes_sysctls": {  # key -> value, persisted and applied now
        "net.bridge.bridge-nf-call-iptables": 1,
        "net.bridge.bridge-nf-call-ip6tables": 1,
        "net.ipv4.ip_forward": 1,
        "net.ipv6.conf.all.forwarding": 1,
        # what kubelet sets itself unless protectKernelDefaults (CIS 4.2.6), which then refuses to start
        # on any other value
        "vm.overcommit_memory": 1,
        "kernel.panic": 10,
        "kernel.panic_on_oops": 1,
    },
    "kubernetes_sysctl_file": "/etc/sysctl.d/90-kubernetes.conf",  # sorts after the hardening file (60-)
    "swap_disabled": True,  # swapoff now and comment swap out of /etc/fstab
    "chrony_enabled": True,  # install and configure chrony
    "chrony_servers": [],  # NTP servers (hostnames/IPs); empty with no pools means the Debian pool
    "chrony_pools": ["2.debian.pool.ntp.org"],  # NTP pools, used alongside chrony_servers
    "chrony_server_options": "iburst",  # options appended to every server/pool line
    "chrony_daemon_opts": "-F 1",  # chronyd options; add "-x" where the clock belongs to a host kernel
    "chrony_sync_in_container": "no",  # Debian's switch to let chronyd run in a container
    "chrony_config_file": "/etc/chrony/chrony.conf",  # chrony's configuration file
    "chrony_defaults_file": "/etc/default/chrony",  # chronyd's options file
}

TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()


@operation()
def modprobe(modules: list[str]):
    """Load kernel modules now (only given the ones the fact found loadable)."""
    if not modules:
        host.noop("no loadable kernel module to load")
        return
    yield StringCommand("modprobe", "-a", *modules)


@operation()
def swap_off(active: list[str], fstab_lines: list[str], fstab: str = "/etc/fstab"):
    """Turn swap off now and comment every swap line of /etc/fstab (given the Swap fact)."""
    if not active and not fstab_lines:
        host.noop("swap is off and not in /etc/fstab")
        return
    if active:
        yield "swapoff -a"
    if fstab_lines:
        # prefix "# " to uncommented lines whose third field is "swap"; keeps a backup
        yield StringCommand(
            "sed", "-i.spectra-bak", "-E",
            "'s/^([^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$/# \\1/'",
            QuoteString(fstab),
        )  # fmt: skip


def check_supported_os(platform: dict[str, Any], supported: dict[str, list[str]]) -> None:
    os_id = platform.get("id")
    version = platform.get("version_id")
    wanted = ", ".join(f"{name} {'/'.join(versions)}" for name, versions in supported.items())
    require(
        os_id in supported and version in supported[os_id],
        f"unsupported OS {platform.get('pretty_name') or os_id or 'unknown'} "
        f"(id={os_id}, version={version}); supported: {wanted}",
    )


def modules_to_persist(features: dict[str, str]) -> list[str]:
    """Modules that come from a .ko file (loadable or already loaded); built-in ones need nothing."""
    return sorted(name for name, status in features.items() if status in (LOADABLE, LOADED))


def _requests(data: dict[str, Any]) -> list[FactRequest]:
    # Every path this component may manage (the modules file only matters when a module is loadable, but
    # reading it costs nothing here): with the other facts below, ONE remote command.
    paths = [data["kubernetes_sysctl_file"], data["kernel_modules_file"]]
    if data["chrony_enabled"]:
        paths += [data["chrony_config_file"], data["chrony_defaults_file"]]
    requests: list[FactRequest] = [
        (KernelFeatures, {"names": list(data["kernel_modules"])}),
        (FileStates, managed.snapshot_files_kwargs(paths)),
        (SysctlValues, {"keys": sorted(dict(data["kubernetes_sysctls"]))}),
        DebPackages,
    ]
    if data["swap_disabled"]:
        requests.append(Swap)
    if data["chrony_enabled"]:
        requests.append((SystemdUnits, {"units": [unit_name("chrony")]}))
    return requests


def fact_requests() -> list[FactRequest]:
    """What :func:`os_prerequisites` reads at prepare time (node.py reads it with other components' facts)."""
    data = component_data(DEFAULTS)
    return _requests(data) if data["os_prerequisites_enabled"] else []


@deploy("OS prerequisites", data_defaults=DEFAULTS)
def os_prerequisites() -> None:
    check_supported_os(prepared_fact(Platform), setting("supported_os"))

    modules = list(setting("kernel_modules"))
    sysctls = dict(setting("kubernetes_sysctls"))
    features, files, sysctl_values, packages_installed, *rest = prepared_facts(*_requests(component_data(DEFAULTS)))
    missing = [name for name in modules if features.get(name, MISSING) == MISSING]
    require(
        not missing,
        f"kernel features missing (neither loaded, built in nor loadable): {', '.join(missing)}; "
        "use a kernel that has them",
    )
    builtin = [name for name in modules if features[name] == BUILTIN]
    if builtin:
        host.noop(f"built into the kernel, nothing to load: {', '.join(builtin)}")

    packages = list(setting("os_packages"))
    if setting("chrony_enabled"):
        packages.append("chrony")

    persist = modules_to_persist(features)

    managed.apt_packages(name="Install OS packages", packages=packages, current=packages_installed)

    modprobe(
        name="Load loadable kernel modules",
        modules=[name for name in modules if features[name] == LOADABLE],
    )
    if persist:
        managed.template(
            name="Persist kernel modules to load at boot",
            src="etc/modules-load.d/kubernetes.conf.j2",
            dest=setting("kernel_modules_file"),
            context={"modules": persist},
            current=files,
        )

    managed.template(
        name="Persist Kubernetes sysctls",
        src="etc/sysctl.d/90-kubernetes.conf.j2",
        dest=setting("kubernetes_sysctl_file"),
        context={"sysctls": sorted(sysctls.items())},
        current=files,
    )
    managed.sysctl(
        name="Apply Kubernetes sysctls",
        values=sysctls,
        current=sysctl_values,
    )

    if setting("swap_disabled"):
        swap = rest.pop(0)
        swap_off(name="Disable swap", active=swap["active"], fstab_lines=swap["fstab"])

    if setting("chrony_enabled"):
        servers = list(setting("chrony_servers"))
        pools = list(setting("chrony_pools"))
        require(bool(servers or pools), "chrony_enabled but neither chrony_servers nor chrony_pools is set")
        config = managed.template(
            name="Configure chrony",
            src="etc/chrony/chrony.conf.j2",
            dest=setting("chrony_config_file"),
            context={"servers": servers, "pools": pools, "server_options": setting("chrony_server_options")},
            current=files,
        )
        options = managed.template(
            name="Configure chronyd options",
            src="etc/default/chrony.j2",
            dest=setting("chrony_defaults_file"),
            context={
                "daemon_opts": setting("chrony_daemon_opts"),
                "sync_in_container": setting("chrony_sync_in_container"),
            },
            current=files,
        )
        managed.service(
            name="chrony running and enabled",
            unit="chrony",
            restarted=config.will_change or options.will_change,
            current=rest.pop(0),
        )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["os_prerequisites_enabled"])


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="os_prerequisites",
    defaults=DEFAULTS,
    deploy=os_prerequisites,
    should_run=should_run,
    fact_requests=_fact_requests,
)
