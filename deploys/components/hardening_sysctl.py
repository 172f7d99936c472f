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

import re
from collections.abc import Mapping
from typing import Any

from pyinfra.api import QuoteString, StringCommand, deploy

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs, render_template
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
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


CHOICES: dict[str, tuple[Any, ...]] = {"hardening_sysctl_rp_filter": (0, 1, 2)}

TABLE_KEYS = ("hardening_sysctl_network", "hardening_sysctl_kernel", "hardening_sysctl_extra")
_SYSCTL_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")  # "/" stands for "." in interface names


def is_network_key(key: str) -> bool:
    return key.startswith("net.")


def _table(settings: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
    table = settings[key] or {}
    return [(str(name), value) for name, value in table.items()] if isinstance(table, Mapping) else []


def _sourced_items(settings: Mapping[str, Any]) -> tuple[dict[str, tuple[str, Any]], dict[str, tuple[str, Any]]]:
    """(network, kernel) ``key -> (setting it comes from, value)``, in the order they are written; later
    settings override earlier ones (extra last)."""
    network: dict[str, tuple[str, Any]] = {
        key: (source, settings[source])
        for key, source in (
            ("net.ipv4.conf.all.rp_filter", "hardening_sysctl_rp_filter"),
            ("net.ipv4.conf.default.rp_filter", "hardening_sysctl_rp_filter"),
            ("net.ipv4.conf.all.log_martians", "hardening_sysctl_log_martians"),
            ("net.ipv4.conf.default.log_martians", "hardening_sysctl_log_martians"),
        )
    }
    for key, value in _table(settings, "hardening_sysctl_network"):
        network[key] = ("hardening_sysctl_network", value)
    kernel = {key: ("hardening_sysctl_kernel", value) for key, value in _table(settings, "hardening_sysctl_kernel")}
    for key, value in _table(settings, "hardening_sysctl_extra"):
        (network if is_network_key(key) else kernel)[key] = ("hardening_sysctl_extra", value)
    return network, kernel


def check(settings: Mapping[str, Any]) -> list[str]:
    """Values the file can hold and Kubernetes survives (pure: ``spectra validate`` runs it too)."""
    problems = [
        f"{key}={settings[key]!r}: a mapping of sysctl key -> value"
        for key in TABLE_KEYS
        if not isinstance(settings[key] or {}, Mapping)
    ]
    network, kernel = _sourced_items(settings)
    for key, (source, value) in {**network, **kernel}.items():
        if not _SYSCTL_KEY.fullmatch(key):
            problems.append(f"{source}: {key!r} is not a sysctl key")
        elif key in PROTECTED and str(value) != PROTECTED[key]:
            problems.append(
                f"{source}[{key!r}]={value!r}: refused, Kubernetes needs {key}={PROTECTED[key]} "
                "(pod traffic is forwarded)"
            )
        elif not isinstance(value, int | str) or isinstance(value, bool) or "\n" in str(value):
            problems.append(f"{source}[{key!r}]={value!r}: a single-line number or string")
    return problems


def sysctl_items(settings: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(network, kernel) key/value pairs to write, in a stable order (values checked by :func:`check`)."""
    network, kernel = _sourced_items(settings)
    if not settings["hardening_sysctl_global_enabled"]:
        kernel = {}
    return (
        [(key, str(value)) for key, (_, value) in network.items()],
        [(key, str(value)) for key, (_, value) in kernel.items()],
    )


def config_request(path: str) -> FactRequest:
    return (ConfigState, config_state_kwargs([ConfigFile(path=path, content="")]))


def runtime_request(settings: Mapping[str, Any]) -> FactRequest:
    network, kernel = sysctl_items(settings)
    return (SysctlValues, {"keys": sorted(key for key, _ in network + kernel)})


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["hardening_sysctl_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`sysctl_hardening` reads at prepare time (node.py reads it with other components' facts)."""
    return [config_request(settings["hardening_sysctl_path"]), runtime_request(settings)]


@deploy("Sysctl hardening")
def sysctl_hardening() -> None:
    """Write the hardening sysctl file; load it (sysctl -p) only when its content changed."""
    settings = Settings()
    network, kernel = sysctl_items(settings)
    path = settings["hardening_sysctl_path"]
    content = render_template("etc/sysctl.d/60-spectra-hardening.conf.j2", network=network, kernel=kernel)
    files = [ConfigFile(path=path, content=content, mode="644")]
    current, runtime = prepared_facts(*fact_requests(settings))
    config_files(
        name=f"Install {path}, load it if it changed",
        files=files,
        on_change=[StringCommand("sysctl", "-e", "-q", "-p", QuoteString(path))],
        current=current,
    )
    # The file only says what boot will load: values changed at runtime since are set back now. Keys this
    # kernel does not have (read as absent) are left to `sysctl -e` above, as on boot.
    present = {key: value for key, value in network + kernel if runtime.get(key) is not None}
    managed.sysctl(name="Hardening sysctls in effect now", values=present, current=runtime)


COMPONENT = Component(
    name="sysctl_hardening",
    defaults=DEFAULTS,
    deploy=sysctl_hardening,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
)
