"""Kernel parameter hardening persisted in /etc/sysctl.d, loaded when the file changed, and any value
changed at runtime since (`sysctl -w` by hand, a package's postinst) set back.

Network settings follow the dev-sec os_hardening / CIS list but keep what Kubernetes needs: forwarding is
never switched off (kube-proxy and every CNI route pod traffic through the node) and reverse-path
filtering defaults to *loose* (2), because strict mode drops the asymmetric paths of overlay and
multi-interface pod networks.

Global (non-network) settings live in the same file but can be skipped with
``hardening_sysctl_global_enabled=False``: in container-like lab nodes they are the one shared kernel's,
and a node changing them changes them for the host and every other node.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs, render_template
from deploys.prepare import FactRequest, component_data, prepared_facts
from facts.config_state import ConfigState
from facts.sysctl import SysctlValues

# Settings Kubernetes needs; a hardening override may never change them.
PROTECTED = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}

DEFAULTS: dict[str, Any] = {
    "hardening_sysctl_enabled": True,  # manage the hardening sysctl file at all
    "hardening_sysctl_global_enabled": True,  # include kernel.*/fs.* (shared by lab nodes and their host)
    "hardening_sysctl_path": "/etc/sysctl.d/60-spectra-hardening.conf",  # the file written
    "hardening_sysctl_rp_filter": 2,  # reverse path filter: 2 loose (CNI-safe), 1 strict, 0 off
    "hardening_sysctl_log_martians": 1,  # log packets with impossible source addresses
    # Network keys (per network namespace), key -> value
    "hardening_sysctl_network": {
        "net.ipv4.conf.all.accept_redirects": 0,
        "net.ipv4.conf.default.accept_redirects": 0,
        "net.ipv4.conf.all.secure_redirects": 0,
        "net.ipv4.conf.default.secure_redirects": 0,
        "net.ipv4.conf.all.send_redirects": 0,
        "net.ipv4.conf.default.send_redirects": 0,
        "net.ipv4.conf.all.accept_source_route": 0,
        "net.ipv4.conf.default.accept_source_route": 0,
        "net.ipv4.icmp_echo_ignore_broadcasts": 1,
        "net.ipv4.icmp_ignore_bogus_error_responses": 1,
        "net.ipv4.tcp_syncookies": 1,
        "net.ipv4.tcp_rfc1337": 1,
        "net.ipv6.conf.all.accept_redirects": 0,
        "net.ipv6.conf.default.accept_redirects": 0,
        "net.ipv6.conf.all.accept_source_route": 0,
        "net.ipv6.conf.default.accept_source_route": 0,
    },
    # Global keys (kernel.*, fs.*), key -> value; skipped when hardening_sysctl_global_enabled is False
    "hardening_sysctl_kernel": {
        "kernel.kptr_restrict": 2,
        "kernel.dmesg_restrict": 1,
        "kernel.randomize_va_space": 2,
        "kernel.sysrq": 0,
        "fs.protected_hardlinks": 1,
        "fs.protected_symlinks": 1,
        "fs.protected_fifos": 1,
        "fs.protected_regular": 2,
        "fs.suid_dumpable": 0,
    },
    "hardening_sysctl_extra": {},  # more key -> value pairs (network or global), applied last
}


def is_network_key(key: str) -> bool:
    return key.startswith("net.")


def sysctl_items(data: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(network, kernel) key/value pairs to write, in a stable order, after the Kubernetes checks."""
    network: dict[str, Any] = {
        "net.ipv4.conf.all.rp_filter": data["hardening_sysctl_rp_filter"],
        "net.ipv4.conf.default.rp_filter": data["hardening_sysctl_rp_filter"],
        "net.ipv4.conf.all.log_martians": data["hardening_sysctl_log_martians"],
        "net.ipv4.conf.default.log_martians": data["hardening_sysctl_log_martians"],
    }
    network.update(data["hardening_sysctl_network"] or {})
    kernel: dict[str, Any] = dict(data["hardening_sysctl_kernel"] or {})
    for key, value in (data["hardening_sysctl_extra"] or {}).items():
        (network if is_network_key(key) else kernel)[key] = value

    for key, value in {**network, **kernel}.items():
        if key in PROTECTED and str(value) != PROTECTED[key]:
            raise DeployError(
                f"{key}={value} refused: Kubernetes needs {key}={PROTECTED[key]} (pod traffic is forwarded)"
            )
        if not isinstance(value, int | str) or "\n" in str(value):
            raise DeployError(f"sysctl {key} needs a single-line value, not {value!r}")
    if data["hardening_sysctl_rp_filter"] not in (0, 1, 2):
        raise DeployError("hardening_sysctl_rp_filter must be 0, 1 or 2")

    if not data["hardening_sysctl_global_enabled"]:
        kernel = {}
    return (
        [(key, str(value)) for key, value in network.items()],
        [(key, str(value)) for key, value in kernel.items()],
    )


def config_request(path: str) -> FactRequest:
    return (ConfigState, config_state_kwargs([ConfigFile(path=path, content="")]))


def runtime_request(data: dict[str, Any]) -> FactRequest:
    network, kernel = sysctl_items(data)
    return (SysctlValues, {"keys": sorted(key for key, _ in network + kernel)})


def fact_requests() -> list[FactRequest]:
    """What :func:`sysctl_hardening` reads at prepare time (node.py reads it with other components' facts)."""
    data = component_data(DEFAULTS)
    if not data["hardening_sysctl_enabled"]:
        return []
    return [config_request(data["hardening_sysctl_path"]), runtime_request(data)]


@deploy("Sysctl hardening", data_defaults=DEFAULTS)
def sysctl_hardening() -> None:
    """Write the hardening sysctl file; load it (sysctl -p) only when its content changed."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["hardening_sysctl_enabled"]:
        host.noop("sysctl hardening disabled (hardening_sysctl_enabled=False)")
        return
    network, kernel = sysctl_items(data)
    path = data["hardening_sysctl_path"]
    content = render_template("etc/sysctl.d/60-spectra-hardening.conf.j2", network=network, kernel=kernel)
    files = [ConfigFile(path=path, content=content, mode="644")]
    config_files(
        name=f"Install {path}, load it if it changed",
        files=files,
        on_change=[StringCommand("sysctl", "-e", "-q", "-p", QuoteString(path))],
        current=prepared_facts(config_request(path))[0],
    )
    # The file only says what boot will load: values changed at runtime since are set back now. Keys this
    # kernel does not have (read as absent) are left to `sysctl -e` above, as on boot.
    runtime = prepared_facts(runtime_request(data))[0]
    present = {key: value for key, value in network + kernel if runtime.get(key) is not None}
    managed.sysctl(name="Hardening sysctls in effect now", values=present, current=runtime)


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["hardening_sysctl_enabled"])


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="sysctl_hardening",
    defaults=DEFAULTS,
    deploy=sysctl_hardening,
    should_run=should_run,
    fact_requests=_fact_requests,
)
