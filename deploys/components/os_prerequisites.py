"""OS prerequisites of a Kubernetes node: supported OS, kernel features, sysctls, swap off, chrony.

Kernel features come from one fact that tells, per module, ``loaded``, ``builtin``, ``loadable``
or ``missing``: only loadable modules are loaded (``modprobe``) and persisted in
/etc/modules-load.d; built-in features (monolithic kernels have no /lib/modules and modprobe fails)
need nothing; a missing one stops the deploy for that host with a clear message.

Lab note: in the lab's container-like nodes /proc/sys is writable; network keys (net.*) belong to
each node, but global keys (kernel.*, vm.*, fs.*) are the one shared kernel's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require
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
    # seconds every apt call of the toolkit (deploys.operations.managed.apt_command) waits for the apt/dpkg
    # locks that unattended-upgrades or cloud-init hold on a fresh host, saying so; 0 fails at once
    "apt_lock_timeout": 300,
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
        # kubelet (cAdvisor), containerd, systemd and log agents each hold inotify instances: the kernel's
        # default of 128 per user runs out on a busy node and kubelet then exits ("inotify_init: too many open
        # files"), as seen in the lab where several nodes share one kernel
        "fs.inotify.max_user_instances": 8192,
        "fs.inotify.max_user_watches": 524288,
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
CHOICES: dict[str, tuple[Any, ...]] = {"chrony_sync_in_container": ("no", "yes")}

_MODULE = re.compile(r"[A-Za-z0-9_-]+")
_SYSCTL_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")  # "/" stands for "." in interface names
_NTP_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")  # a hostname, an IPv4 or a bare IPv6 address
_CHRONY_OPTIONS = re.compile(r"[A-Za-z0-9 ._-]*")  # words such as "iburst minpoll 4 nts"
_UNQUOTED = re.compile(r'[^"\\\n]*')  # fits between the double quotes of /etc/default/chrony


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats of what goes into modprobe, the sysctl file and chrony's files (pure: no host needed)."""
    problems = managed.apt_lock_timeout_problems(settings["apt_lock_timeout"])
    supported = settings["supported_os"]
    if not isinstance(supported, Mapping) or not all(isinstance(v, list | tuple) for v in supported.values()):
        problems.append(f"supported_os={supported!r}: a mapping of os-release ID -> list of VERSION_IDs")
    for name in settings["kernel_modules"] or []:
        if not _MODULE.fullmatch(str(name)):
            problems.append(f"kernel_modules: {name!r} is not a kernel module name")
    sysctls = settings["kubernetes_sysctls"]
    if not isinstance(sysctls, Mapping):
        problems.append(f"kubernetes_sysctls={sysctls!r}: a mapping of sysctl key -> value")
    else:
        for key, value in sysctls.items():
            if not _SYSCTL_KEY.fullmatch(str(key)):
                problems.append(f"kubernetes_sysctls: {key!r} is not a sysctl key")
            elif not isinstance(value, int | str) or isinstance(value, bool) or "\n" in str(value):
                problems.append(f"kubernetes_sysctls[{key!r}]={value!r}: a single-line number or string")
    if not settings["chrony_enabled"]:
        return problems
    servers, pools = list(settings["chrony_servers"] or []), list(settings["chrony_pools"] or [])
    if not servers and not pools:
        problems.append("chrony_servers=[]: chrony_enabled needs chrony_servers or chrony_pools (both are empty)")
    for key, sources in (("chrony_servers", servers), ("chrony_pools", pools)):
        for source in sources:
            if not _NTP_SOURCE.fullmatch(str(source)):
                problems.append(f"{key}: {source!r} is not a hostname or IP address")
    options = settings["chrony_server_options"]
    if not _CHRONY_OPTIONS.fullmatch(str(options)):
        problems.append(f"chrony_server_options={options!r}: chrony server options (words, such as iburst)")
    daemon_opts = settings["chrony_daemon_opts"]
    if not _UNQUOTED.fullmatch(str(daemon_opts)):
        problems.append(f"chrony_daemon_opts={daemon_opts!r}: chronyd options without quotes or line breaks")
    return problems


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


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["os_prerequisites_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`os_prerequisites` reads at prepare time (node.py reads it with other components' facts)."""
    # Every path this component may manage (the modules file only matters when a module is loadable, but
    # reading it costs nothing here): with the other facts below, ONE remote command.
    paths = [settings["kubernetes_sysctl_file"], settings["kernel_modules_file"]]
    if settings["chrony_enabled"]:
        paths += [settings["chrony_config_file"], settings["chrony_defaults_file"]]
    requests: list[FactRequest] = [
        Platform,
        (KernelFeatures, {"names": list(settings["kernel_modules"])}),
        (FileStates, managed.snapshot_files_kwargs(paths)),
        (SysctlValues, {"keys": sorted(dict(settings["kubernetes_sysctls"]))}),
        DebPackages,
    ]
    if settings["swap_disabled"]:
        requests.append(Swap)
    if settings["chrony_enabled"]:
        requests.append((SystemdUnits, {"units": [unit_name("chrony")]}))
    return requests


@deploy("OS prerequisites")
def os_prerequisites() -> None:
    settings = Settings()
    platform, features, files, sysctl_values, packages_installed, *rest = prepared_facts(*fact_requests(settings))
    # The OS and the kernel's features are facts the run cannot change: refused here, not in check().
    check_supported_os(platform, settings["supported_os"])

    modules = list(settings["kernel_modules"])
    sysctls = dict(settings["kubernetes_sysctls"])
    missing = [name for name in modules if features.get(name, MISSING) == MISSING]
    require(
        not missing,
        f"kernel features missing (neither loaded, built in nor loadable): {', '.join(missing)}; "
        "use a kernel that has them",
    )
    builtin = [name for name in modules if features[name] == BUILTIN]
    if builtin:
        host.noop(f"built into the kernel, nothing to load: {', '.join(builtin)}")

    packages = list(settings["os_packages"])
    if settings["chrony_enabled"]:
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
            dest=settings["kernel_modules_file"],
            context={"modules": persist},
            current=files,
        )

    managed.template(
        name="Persist Kubernetes sysctls",
        src="etc/sysctl.d/90-kubernetes.conf.j2",
        dest=settings["kubernetes_sysctl_file"],
        context={"sysctls": sorted(sysctls.items())},
        current=files,
    )
    managed.sysctl(
        name="Apply Kubernetes sysctls",
        values=sysctls,
        current=sysctl_values,
    )

    if settings["swap_disabled"]:
        swap = rest.pop(0)
        swap_off(name="Disable swap", active=swap["active"], fstab_lines=swap["fstab"])

    if settings["chrony_enabled"]:
        servers = list(settings["chrony_servers"] or [])
        pools = list(settings["chrony_pools"] or [])
        config = managed.template(
            name="Configure chrony",
            src="etc/chrony/chrony.conf.j2",
            dest=settings["chrony_config_file"],
            context={"servers": servers, "pools": pools, "server_options": settings["chrony_server_options"]},
            current=files,
        )
        options = managed.template(
            name="Configure chronyd options",
            src="etc/default/chrony.j2",
            dest=settings["chrony_defaults_file"],
            context={
                "daemon_opts": settings["chrony_daemon_opts"],
                "sync_in_container": settings["chrony_sync_in_container"],
            },
            current=files,
        )
        managed.service(
            name="chrony running and enabled",
            unit="chrony",
            restarted=config.will_change or options.will_change,
            current=rest.pop(0),
        )


COMPONENT = Component(
    name="os_prerequisites",
    defaults=DEFAULTS,
    deploy=os_prerequisites,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
)
