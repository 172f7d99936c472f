"""How each check of :mod:`compliance.checks` is decided on a host.

A :class:`Probe` reads host state through a testinfra host, a few batched commands per host (sysctls in
one ``sysctl`` call, files in one ``stat``, units in one ``systemctl show``), cached for the life of the
process. The decisions are pure functions of what was read (``evaluate_*``, ``parse_*``) so the unit tests
feed them recorded output. ``CHECK_FUNCTIONS`` maps every check id to its function.

Kubernetes files are checked when they exist. When they do not, the check is ``not_applicable`` with the
reason (no kubelet unit, not a control-plane host, ...), except where the component is installed and the
file is one it cannot run without: then it fails.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

OutcomeStatus = Literal["pass", "fail", "not_applicable"]


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    reason: str = ""


def passed(reason: str = "") -> Outcome:
    return Outcome("pass", reason)


def failed(reason: str) -> Outcome:
    return Outcome("fail", reason)


def not_applicable(reason: str) -> Outcome:
    return Outcome("not_applicable", reason)


# --- host context (from the inventory) -------------------------------------------------------------


@dataclass
class HostContext:
    """What the inventory says about a host: its roles, groups and the data keys checks depend on."""

    name: str
    roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # topology reads roles from data, as from a pyinfra host's
        self.data.setdefault("roles", list(self.roles))

    def setting(self, key: str) -> Any:
        """The deploys' view of this host's setting: its data, else the default of the key's owner."""
        from deploys.settings import setting

        return setting(key, self)


# The data keys checks read (their defaults are their owners', deploys.settings): compliance copies these from
# the inventory into each host's context.
CONTEXT_KEYS: tuple[str, ...] = (
    "roles",
    "cluster_node_roles",
    "ssh_port",
    "kubelet_port",
    "apiserver_port",
    "etcd_client_port",
    "etcd_peer_port",
    "kubelet_enabled",
    "control_plane_enabled",
    "etcd_enabled",
    "node_exporter_enabled",
    "node_exporter_listen_address",
    "fluentd_enabled",
    "audit_rules_path",
    "firewall_table",
)


# --- parsers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStat:
    path: str
    mode: int
    user: str
    group: str
    kind: str  # "regular file", "directory", ...


STAT_FORMAT = "%a\t%U\t%G\t%F\t%n"


def parse_stat(output: str) -> dict[str, FileStat]:
    """Lines of ``stat -c '%a\\t%U\\t%G\\t%F\\t%n'``."""
    stats = {}
    for line in output.splitlines():
        fields = line.split("\t", 4)
        if len(fields) != 5:
            continue
        mode, user, group, kind, path = fields
        stats[path] = FileStat(path, int(mode, 8), user, group, kind)
    return stats


def parse_sysctl(output: str) -> dict[str, str]:
    """Lines of ``sysctl -e KEY...`` (``key = value``)."""
    values = {}
    for line in output.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_sshd_config(output: str) -> dict[str, str]:
    """``sshd -T``: lowercase keyword, space, value (the first value of repeated keywords is kept)."""
    settings: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key not in settings:
            settings[key.lower()] = value.strip()
    return settings


@dataclass(frozen=True)
class Listener:
    protocol: str  # tcp, udp
    address: str  # "0.0.0.0", "::", "*" for any
    port: int
    process: str  # first process name, "" when ss could not tell

    @property
    def loopback(self) -> bool:
        if self.address == "*":
            return False
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        owner = f" ({self.process})" if self.process else ""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol} {address}:{self.port}{owner}"


_PROCESS_RE = re.compile(r'users:\(\("([^"]+)"')


def parse_ss(output: str) -> list[Listener]:
    """``ss -Htulnp``: Netid State Recv-Q Send-Q Local:Port Peer:Port [Process]."""
    listeners = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[0] not in ("tcp", "udp"):
            continue
        address, _, port = fields[4].rpartition(":")
        address = address.strip("[]").split("%", 1)[0]
        match = _PROCESS_RE.search(line)
        try:
            number = int(port)
        except ValueError:
            continue
        listeners.append(Listener(fields[0], address, number, match.group(1) if match else ""))
    return listeners


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str  # loaded, not-found, masked
    active: str  # active, inactive, failed, ...
    enabled: str  # enabled, disabled, static, ...

    @property
    def installed(self) -> bool:
        return self.load not in ("not-found", "")


def parse_units(output: str, names: Iterable[str]) -> dict[str, UnitState]:
    """``systemctl show -p Id -p LoadState -p ActiveState -p UnitFileState UNIT...``: one block per unit,
    in the order asked (``Id`` is the resolved name, e.g. ``sshd.service`` -> ``ssh.service``)."""
    blocks: list[dict[str, str]] = [{}]
    for line in output.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition("=")
        blocks[-1][key] = value
    blocks = [block for block in blocks if block]
    units = {}
    for name, block in zip(names, blocks, strict=False):
        units[name] = UnitState(
            name, block.get("LoadState", ""), block.get("ActiveState", ""), block.get("UnitFileState", "")
        )
    return units


def parse_packages(output: str) -> dict[str, str]:
    """``dpkg-query -W -f '${Package}\\t${db:Status-Abbrev}\\n'``: package -> status (``ii`` installed)."""
    packages = {}
    for line in output.splitlines():
        name, sep, status = line.partition("\t")
        if sep:
            packages[name.split(":", 1)[0]] = status.strip()
    return packages


# --- evaluators ------------------------------------------------------------------------------------


def evaluate_sysctls(values: Mapping[str, str], expected: Mapping[str, Iterable[str]]) -> Outcome:
    """Each key must have one of its allowed values; a key the kernel lacks fails."""
    problems = []
    for key, allowed in expected.items():
        allowed = list(allowed)
        value = values.get(key)
        if value is None:
            problems.append(f"{key} is not present in this kernel")
        elif value not in allowed:
            problems.append(f"{key} = {value} (want {' or '.join(allowed)})")
    if problems:
        return failed("; ".join(problems))
    return passed(", ".join(f"{key} = {values[key]}" for key in expected))


def mode_problems(stat: FileStat, max_mode: int | None = None, user: str | None = None,
                  groups: Iterable[str] | None = None) -> list[str]:  # fmt: skip
    """Why a file breaks "mode or more restrictive" and its expected owner (empty: it does not)."""
    problems = []
    if max_mode is not None and stat.mode & ~max_mode & 0o7777:
        problems.append(f"{stat.path} is {stat.mode:04o} (want {max_mode:04o} or stricter)")
    owners = list(groups) if groups is not None else None
    if user is not None and stat.user != user:
        problems.append(f"{stat.path} is owned by user {stat.user} (want {user})")
    if owners is not None and stat.group not in owners:
        problems.append(f"{stat.path} has group {stat.group} (want {' or '.join(owners)})")
    return problems


def evaluate_files(stats: Iterable[FileStat], max_mode: int | None = None, user: str | None = None,
                   groups: Iterable[str] | None = None) -> Outcome:  # fmt: skip
    stats = list(stats)
    owners = list(groups) if groups is not None else None
    problems = [problem for stat in stats for problem in mode_problems(stat, max_mode, user, owners)]
    if problems:
        return failed("; ".join(problems))
    return passed(", ".join(f"{stat.path} {stat.mode:04o} {stat.user}:{stat.group}" for stat in stats))


WEAK_KEX = ("sha1", "group1-", "nistp")
WEAK_CIPHERS = ("-cbc", "3des", "arcfour", "blowfish", "cast128", "rijndael")
WEAK_MACS = ("sha1", "md5", "umac-64", "ripemd")


def weak_algorithms(value: str, patterns: Iterable[str]) -> list[str]:
    patterns = list(patterns)
    return [algorithm for algorithm in value.split(",") if any(p in algorithm.lower() for p in patterns)]


def evaluate_algorithms(settings: Mapping[str, str], keyword: str, patterns: Iterable[str]) -> Outcome:
    value = settings.get(keyword)
    if value is None:
        return failed(f"sshd -T prints no {keyword}")
    weak = weak_algorithms(value, patterns)
    if weak:
        return failed(f"{keyword} offers {', '.join(weak)}")
    return passed(f"{keyword} {value}")


def evaluate_sshd_setting(settings: Mapping[str, str], keyword: str, allowed: Iterable[str]) -> Outcome:
    allowed = list(allowed)
    value = settings.get(keyword)
    if value is None:
        return failed(f"sshd -T prints no {keyword}")
    if value not in allowed:
        return failed(f"{keyword} {value} (want {' or '.join(allowed)})")
    return passed(f"{keyword} {value}")


def exposed_listeners(listeners: Iterable[Listener], allowed_tcp: Iterable[int]) -> list[Listener]:
    allowed = set(allowed_tcp)
    return [item for item in listeners if not item.loopback and not (item.protocol == "tcp" and item.port in allowed)]


def evaluate_port_owners(listeners: Iterable[Listener], owners: Mapping[int, str]) -> Outcome:
    listeners = list(listeners)
    problems = []
    for port, process in owners.items():
        # beyond loopback: 127.0.0.1:6443 is the node-local balancer's on a control plane, by design
        holders = [item for item in listeners if item.protocol == "tcp" and item.port == port and not item.loopback]
        if not holders:
            problems.append(f"nothing listens on {port}/tcp (want {process})")
            continue
        for item in holders:
            if not item.process:
                problems.append(f"cannot tell which process holds {item} (ss -p needs root)")
            elif item.process != process:
                problems.append(f"{item} is held by {item.process}, not {process}")
    if problems:
        return failed("; ".join(problems))
    return passed(", ".join(f"{port}/tcp: {process}" for port, process in owners.items()))


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def evaluate_kubelet_config(check_id: str, config: Mapping[str, Any], path: str) -> Outcome:
    """CIS 4.2.x on a KubeletConfiguration (v1beta1 defaults apply to keys that are not set).
    Only the file: flags on kubelet's command line, which override it, are not read here."""
    where = f"in {path}"
    if check_id == "4.2.1":
        value = _lookup(config, "authentication.anonymous.enabled")
        if value is True:
            return failed(f"authentication.anonymous.enabled is true {where}")
        return passed(f"authentication.anonymous.enabled is {value if value is not None else 'unset (false)'}")
    if check_id == "4.2.2":
        value = _lookup(config, "authorization.mode")
        if value == "AlwaysAllow":
            return failed(f"authorization.mode is AlwaysAllow {where}")
        return passed(f"authorization.mode is {value or 'unset (Webhook)'}")
    if check_id == "4.2.3":
        value = _lookup(config, "authentication.x509.clientCAFile")
        if not value:
            return failed(f"authentication.x509.clientCAFile is not set {where}")
        return passed(f"authentication.x509.clientCAFile is {value}")
    if check_id == "4.2.4":
        value = config.get("readOnlyPort")
        if value not in (None, 0):
            return failed(f"readOnlyPort is {value} {where}")
        return passed(f"readOnlyPort is {value if value is not None else 'unset (0)'}")
    if check_id == "4.2.5":
        value = config.get("streamingConnectionIdleTimeout")
        if value is not None and str(value).strip() in ("0", "0s", "0m", "0h", "0h0m0s"):
            return failed(f"streamingConnectionIdleTimeout is {value} {where}")
        return passed(f"streamingConnectionIdleTimeout is {value or 'unset (4h0m0s)'}")
    if check_id == "4.2.6":
        value = config.get("makeIPTablesUtilChains")
        if value is False:
            return failed(f"makeIPTablesUtilChains is false {where}")
        return passed(f"makeIPTablesUtilChains is {value if value is not None else 'unset (true)'}")
    if check_id == "4.2.10":
        value = config.get("rotateCertificates")
        if value is False:
            return failed(f"rotateCertificates is false {where}")
        return passed(f"rotateCertificates is {value if value is not None else 'unset'}")
    raise KeyError(check_id)


def evaluate_proxy_metrics(config: Mapping[str, Any], path: str) -> Outcome:
    value = config.get("metricsBindAddress")
    if not value:
        return passed(f"metricsBindAddress unset in {path} (default 127.0.0.1:10249)")
    host = str(value).rpartition(":")[0].strip("[]") if ":" in str(value) else str(value)
    if host == "localhost" or (host and _is_loopback(host)):
        return passed(f"metricsBindAddress {value}")
    return failed(f"metricsBindAddress {value} in {path} (want 127.0.0.1:10249)")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# --- reading a host --------------------------------------------------------------------------------

SYSCTL_RULES: dict[str, dict[str, tuple[str, ...]]] = {
    "SPX-OS-001": {"net.ipv4.ip_forward": ("1",)},
    "SPX-OS-002": {"net.bridge.bridge-nf-call-iptables": ("1",), "net.bridge.bridge-nf-call-ip6tables": ("1",)},
    "SPX-OS-003": {
        "net.ipv4.conf.all.accept_redirects": ("0",),
        "net.ipv4.conf.default.accept_redirects": ("0",),
        "net.ipv4.conf.all.secure_redirects": ("0",),
        "net.ipv4.conf.default.secure_redirects": ("0",),
        "net.ipv6.conf.all.accept_redirects": ("0",),
        "net.ipv6.conf.default.accept_redirects": ("0",),
    },
    "SPX-OS-004": {"net.ipv4.conf.all.send_redirects": ("0",), "net.ipv4.conf.default.send_redirects": ("0",)},
    "SPX-OS-005": {
        "net.ipv4.conf.all.accept_source_route": ("0",),
        "net.ipv4.conf.default.accept_source_route": ("0",),
        "net.ipv6.conf.all.accept_source_route": ("0",),
        "net.ipv6.conf.default.accept_source_route": ("0",),
    },
    "SPX-OS-006": {"net.ipv4.conf.all.rp_filter": ("1", "2")},
    "SPX-OS-007": {"net.ipv4.tcp_syncookies": ("1",)},
    "SPX-OS-008": {
        "net.ipv4.icmp_echo_ignore_broadcasts": ("1",),
        "net.ipv4.icmp_ignore_bogus_error_responses": ("1",),
    },
    "SPX-OS-009": {"net.ipv4.conf.all.log_martians": ("1",)},
}

# check id -> (path, max mode, user, allowed groups)
OS_FILE_RULES: dict[str, tuple[str, int, str, tuple[str, ...]]] = {
    "SPX-OS-020": ("/etc/passwd", 0o644, "root", ("root",)),
    "SPX-OS-021": ("/etc/shadow", 0o640, "root", ("shadow", "root")),
    "SPX-OS-022": ("/etc/group", 0o644, "root", ("root",)),
    "SPX-OS-023": ("/etc/gshadow", 0o640, "root", ("shadow", "root")),
    "SPX-OS-024": ("/etc/ssh/sshd_config", 0o600, "root", ("root",)),
}

LEGACY_PACKAGES = (
    "telnetd", "inetutils-telnetd", "telnetd-ssl", "rsh-server", "rsh-redone-server", "tftpd", "tftpd-hpa",
    "atftpd", "xinetd", "openbsd-inetd", "inetutils-inetd", "rlinetd", "avahi-daemon", "nis", "talkd",
    "inetutils-talkd", "rpcbind",
)  # fmt: skip
LEGACY_TCP_PORTS = {23: "telnet", 111: "rpcbind", 512: "rexec", 513: "rlogin", 514: "rsh"}
LEGACY_UDP_PORTS = {69: "tftp", 111: "rpcbind", 517: "talk", 518: "ntalk", 5353: "mdns (avahi)"}

KUBELET_UNIT_FILES = (
    "/etc/systemd/system/kubelet.service",
    "/lib/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service.d/*.conf",
    "/usr/lib/systemd/system/kubelet.service.d/*.conf",
)
# kubeadm's, then ours (deploys/components/kube_proxy.py and the PKI's kubeconfig)
PROXY_KUBECONFIGS = (
    "/etc/kubernetes/proxy.conf",
    "/var/lib/kube-proxy/kubeconfig.conf",
    "/etc/kubernetes/kube-proxy.conf",
)
PROXY_CONFIGS = (
    "/var/lib/kube-proxy/config.conf",
    "/etc/kubernetes/kube-proxy.yaml",
    "/var/lib/kube-proxy/config.yaml",
)
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
DEFAULT_CLIENT_CA = "/etc/kubernetes/pki/ca.crt"
MANIFESTS = "/etc/kubernetes/manifests"
PKI_DIR = "/etc/kubernetes/pki"
ETCD_DATA_DIR = "/var/lib/etcd"
CONTROL_PLANE_UNITS = ("kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service")

SERVICE_UNITS = {
    "SPX-SVC-001": "containerd.service",
    "SPX-SVC-002": "node_exporter.service",
    "SPX-SVC-003": "chrony.service",
    "SPX-SVC-004": "ssh.service",
    "SPX-SVC-005": "nftables.service",
}
ALL_UNITS = (
    *SERVICE_UNITS.values(), "fluentd.service", "kubelet.service", "auditd.service", "etcd.service",
    *CONTROL_PLANE_UNITS,
)  # fmt: skip


class HostUnreachable(Exception):
    """ssh could not reach the host (or authenticate it): every check on it fails with this reason."""


class Probe:
    """Cached reads of one host through a testinfra host (``host.run``)."""

    def __init__(self, host: Any, context: HostContext) -> None:
        self.host = host
        self.context = context
        self._cache: dict[str, Any] = {}
        self._unreachable = ""

    def run(self, command: str) -> Any:
        """Run a command; once ssh failed to reach the host (exit 255), every later call fails at once."""
        if self._unreachable:
            raise HostUnreachable(self._unreachable)
        try:
            return self.host.run(command)
        except RuntimeError as exc:  # testinfra's ssh backend raises with the CommandResult when ssh exits 255
            result = exc.args[0] if exc.args else None
            stderr = getattr(result, "stderr", None)
            if stderr is None:
                raise
            self._unreachable = f"cannot reach {self.context.name} over ssh: {' '.join(str(stderr).split())[:300]}"
            raise HostUnreachable(self._unreachable) from None

    def _cached(self, key: str, read: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def sysctls(self) -> dict[str, str]:
        keys = sorted({key for rule in SYSCTL_RULES.values() for key in rule})
        return self._cached("sysctl", lambda: parse_sysctl(self.run(f"sysctl -e {' '.join(keys)}").stdout))

    def sshd(self) -> dict[str, str]:
        def read() -> dict[str, str]:
            result = self.run("sshd -T 2>&1 || /usr/sbin/sshd -T")
            if result.rc != 0:
                raise RuntimeError(f"sshd -T exited {result.rc}: {result.stdout.strip()[-300:]}")
            return parse_sshd_config(result.stdout)

        return self._cached("sshd", read)

    def listeners(self) -> list[Listener]:
        def read() -> list[Listener]:
            result = self.run("ss -Htulnp")
            if result.rc != 0:
                raise RuntimeError(f"ss -Htulnp exited {result.rc}: {result.stderr.strip()}")
            return parse_ss(result.stdout)

        return self._cached("ss", read)

    def packages(self) -> dict[str, str]:
        command = "dpkg-query -W -f '${Package}\\t${db:Status-Abbrev}\\n'"
        return self._cached("packages", lambda: parse_packages(self.run(command).stdout))

    def installed(self, package: str) -> bool:
        return self.packages().get(package, "").startswith("ii")

    def units(self) -> dict[str, UnitState]:
        def read() -> dict[str, UnitState]:
            props = "-p Id -p LoadState -p ActiveState -p UnitFileState"
            return parse_units(self.run(f"systemctl show {props} {' '.join(ALL_UNITS)}").stdout, ALL_UNITS)

        return self._cached("units", read)

    def stat(self, patterns: Iterable[str]) -> dict[str, FileStat]:
        """Existing paths among ``patterns`` (shell globs allowed), one ``stat`` per call."""
        patterns = list(patterns)
        key = "stat:" + "\0".join(patterns)

        def read() -> dict[str, FileStat]:
            words = " ".join(_glob_word(pattern) for pattern in patterns)
            return parse_stat(self.run(f"stat -c '{STAT_FORMAT}' -- {words} 2>/dev/null; true").stdout)

        return self._cached(key, read)

    def tree(self, directory: str) -> dict[str, FileStat]:
        """``directory`` and everything below it (empty when it does not exist)."""

        def read() -> dict[str, FileStat]:
            quoted = shlex.quote(directory)
            command = f"[ -e {quoted} ] && find {quoted} -xdev -exec stat -c '{STAT_FORMAT}' {{}} + ; true"
            return parse_stat(self.run(command).stdout)

        return self._cached("tree:" + directory, read)

    def read_yaml(self, path: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            result = self.run(f"cat -- {shlex.quote(path)}")
            if result.rc != 0:
                raise RuntimeError(f"cannot read {path}: {result.stderr.strip()}")
            loaded = yaml.safe_load(result.stdout) or {}
            if not isinstance(loaded, dict):
                raise RuntimeError(f"{path} is not a YAML mapping")
            return loaded

        return self._cached("yaml:" + path, read)

    def container(self) -> str | None:
        """The container technology the host runs in (systemd-detect-virt -c, /run/systemd/container)."""

        def read() -> str | None:
            result = self.run("systemd-detect-virt -c 2>/dev/null || cat /run/systemd/container 2>/dev/null; true")
            value = result.stdout.strip().splitlines()[0].strip() if result.stdout.strip() else ""
            return None if value in ("", "none") else value

        return self._cached("container", read)

    def roles(self) -> list[str]:
        return list(self.context.roles)


def _glob_word(pattern: str) -> str:
    """Quote a path for the shell but keep a trailing ``*.conf`` glob working."""
    directory, _, name = pattern.rpartition("/")
    if "*" in name:
        return f"{shlex.quote(directory)}/{name}"
    return shlex.quote(pattern)


# --- the checks ------------------------------------------------------------------------------------

CheckFunction = Callable[[Probe], Outcome]
CHECK_FUNCTIONS: dict[str, CheckFunction] = {}


def check(*ids: str) -> Callable[[Callable[[Probe, str], Outcome]], Callable[[Probe, str], Outcome]]:
    def register(function: Callable[[Probe, str], Outcome]) -> Callable[[Probe, str], Outcome]:
        for check_id in ids:
            CHECK_FUNCTIONS[check_id] = functools.partial(_call, function, check_id)
        return function

    return register


def _call(function: Callable[[Probe, str], Outcome], check_id: str, probe: Probe) -> Outcome:
    return function(probe, check_id)


@check(*SYSCTL_RULES)
def _sysctl(probe: Probe, check_id: str) -> Outcome:
    return evaluate_sysctls(probe.sysctls(), SYSCTL_RULES[check_id])


@check("SPX-OS-010")
def _swap(probe: Probe, check_id: str) -> Outcome:
    active = probe.run("tail -n +2 /proc/swaps").stdout.split()
    fstab = [
        line for line in probe.run("cat /etc/fstab").stdout.splitlines()
        if line.split() and not line.lstrip().startswith("#") and len(line.split()) > 2 and line.split()[2] == "swap"
    ]  # fmt: skip
    problems = []
    if active:
        problems.append(f"swap is active: {active[0]}")
    if fstab:
        problems.append(f"/etc/fstab mounts swap: {fstab[0].strip()}")
    return failed("; ".join(problems)) if problems else passed("no active swap, none in /etc/fstab")


@check(*OS_FILE_RULES)
def _os_file(probe: Probe, check_id: str) -> Outcome:
    path, max_mode, user, groups = OS_FILE_RULES[check_id]
    stats = probe.stat(rule[0] for rule in OS_FILE_RULES.values())
    if path not in stats:
        return failed(f"{path} is missing")
    return evaluate_files([stats[path]], max_mode, user, groups)


@check("SPX-OS-030")
def _legacy_packages(probe: Probe, check_id: str) -> Outcome:
    found = [name for name in LEGACY_PACKAGES if probe.installed(name)]
    if found:
        return failed(f"installed: {', '.join(found)}")
    return passed(f"none of {len(LEGACY_PACKAGES)} legacy service packages installed")


@check("SPX-OS-031")
def _legacy_ports(probe: Probe, check_id: str) -> Outcome:
    found = [
        f"{item} [{LEGACY_TCP_PORTS.get(item.port) if item.protocol == 'tcp' else LEGACY_UDP_PORTS.get(item.port)}]"
        for item in probe.listeners()
        if (item.protocol == "tcp" and item.port in LEGACY_TCP_PORTS)
        or (item.protocol == "udp" and item.port in LEGACY_UDP_PORTS)
    ]
    return failed(f"listening: {', '.join(found)}") if found else passed("no legacy service port is listening")


@check("SPX-OS-040")
def _audit_rules_file(probe: Probe, check_id: str) -> Outcome:
    path = str(probe.context.setting("audit_rules_path"))
    stats = probe.stat([path])
    if path not in stats:
        return failed(f"{path} is missing")
    problems = mode_problems(stats[path], 0o644, "root", ["root"])
    content = probe.run(f"cat -- {shlex.quote(path)}").stdout
    watches = [line for line in content.splitlines() if line.startswith("-w ")]
    if not watches:
        problems.append(f"{path} has no watch (-w) rules")
    if problems:
        return failed("; ".join(problems))
    return passed(f"{path} {stats[path].mode:04o} root, {len(watches)} watches")


@check("SPX-OS-041")
def _audit_loaded(probe: Probe, check_id: str) -> Outcome:
    container = probe.container()
    if container:
        return not_applicable(
            f"the node is a {container} container (systemd-detect-virt -c): the kernel audit subsystem is the "
            "host's and is not namespaced, so rules cannot be loaded here; the rules file is checked by SPX-OS-040"
        )
    path = str(probe.context.setting("audit_rules_path"))
    unit = probe.units()["auditd.service"]
    problems = []
    if unit.active != "active":
        problems.append(f"auditd is {unit.active or 'not installed'}")
    content = probe.run(f"cat -- {shlex.quote(path)} 2>/dev/null; true").stdout
    keys = set(re.findall(r"-k\s+(\S+)", content))
    loaded = probe.run("auditctl -l 2>&1")
    if loaded.rc != 0:
        problems.append(f"auditctl -l failed: {loaded.stdout.strip()[:200]}")
    else:
        missing = sorted(key for key in keys if f"-k {key}" not in loaded.stdout and f"key={key}" not in loaded.stdout)
        if missing:
            problems.append(f"rules with keys {', '.join(missing)} from {path} are not loaded")
        if not keys:
            problems.append(f"no keyed rules in {path}")
    return failed("; ".join(problems)) if problems else passed(f"auditd active, keys {', '.join(sorted(keys))} loaded")


SSH_ALGORITHMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "SPX-SSH-001": ("kexalgorithms", WEAK_KEX),
    "SPX-SSH-002": ("ciphers", WEAK_CIPHERS),
    "SPX-SSH-003": ("macs", WEAK_MACS),
}
SSH_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "SPX-SSH-004": {"passwordauthentication": ("no",)},
    "SPX-SSH-005": {"kbdinteractiveauthentication": ("no",)},
    "SPX-SSH-006": {"permitrootlogin": ("prohibit-password", "without-password", "no")},
    "SPX-SSH-007": {"permitemptypasswords": ("no",)},
    "SPX-SSH-009": {"x11forwarding": ("no",)},
    "SPX-SSH-010": {"hostbasedauthentication": ("no",), "ignorerhosts": ("yes",)},
}


@check(*SSH_ALGORITHMS)
def _ssh_algorithms(probe: Probe, check_id: str) -> Outcome:
    keyword, patterns = SSH_ALGORITHMS[check_id]
    return evaluate_algorithms(probe.sshd(), keyword, patterns)


@check(*SSH_SETTINGS)
def _ssh_settings(probe: Probe, check_id: str) -> Outcome:
    outcomes = [evaluate_sshd_setting(probe.sshd(), key, allowed) for key, allowed in SSH_SETTINGS[check_id].items()]
    bad = [outcome.reason for outcome in outcomes if outcome.status == "fail"]
    return failed("; ".join(bad)) if bad else passed("; ".join(outcome.reason for outcome in outcomes))


@check("SPX-SSH-008")
def _ssh_max_auth_tries(probe: Probe, check_id: str) -> Outcome:
    value = probe.sshd().get("maxauthtries", "")
    if not value.isdigit():
        return failed(f"maxauthtries {value or 'missing'}")
    return passed(f"maxauthtries {value}") if int(value) <= 4 else failed(f"maxauthtries {value} (want 4 or less)")


def _unit_outcome(unit: UnitState) -> Outcome:
    problems = []
    if not unit.installed:
        return failed(f"{unit.name} is not installed")
    if unit.active != "active":
        problems.append(f"{unit.name} is {unit.active}")
    if unit.enabled not in ("enabled", "enabled-runtime", "static", "alias"):
        problems.append(f"{unit.name} is {unit.enabled or 'not enabled'} at boot")
    return failed("; ".join(problems)) if problems else passed(f"{unit.name} active, {unit.enabled}")


@check(*SERVICE_UNITS)
def _service(probe: Probe, check_id: str) -> Outcome:
    outcome = _unit_outcome(probe.units()[SERVICE_UNITS[check_id]])
    if check_id != "SPX-SVC-005" or outcome.status == "fail":
        return outcome
    table = str(probe.context.setting("firewall_table"))
    ruleset = probe.run(f"nft list table inet {shlex.quote(table)}")
    if ruleset.rc != 0:
        return failed(f"nftables table inet {table} is not loaded: {ruleset.stderr.strip()[:200]}")
    if "policy drop" not in ruleset.stdout:
        return failed(f"table inet {table} has no chain with policy drop")
    return passed(f"{outcome.reason}; table inet {table} loaded, policy drop")


@check("SPX-SVC-006")
def _fluentd(probe: Probe, check_id: str) -> Outcome:
    enabled = bool(probe.context.setting("fluentd_enabled"))
    if not probe.installed("fluent-package"):
        if not enabled:
            return not_applicable("fluent-package is not installed and fluentd_enabled is false for this host")
        return failed("fluentd_enabled is true for this host but fluent-package is not installed")
    return _unit_outcome(probe.units()["fluentd.service"])


def _kubelet_unit(probe: Probe) -> UnitState:
    return probe.units()["kubelet.service"]


NO_KUBELET = "kubelet is not installed on this host (no kubelet.service)"


@check("SPX-SVC-007")
def _kubelet_service(probe: Probe, check_id: str) -> Outcome:
    unit = _kubelet_unit(probe)
    if not unit.installed:
        return not_applicable(NO_KUBELET)
    return _unit_outcome(unit)


def expected_listeners(context: HostContext) -> dict[int, str]:
    """TCP port -> the program that must hold it beyond loopback, from the host's roles: sshd and node_exporter
    everywhere, kubelet on Kubernetes nodes, kube-apiserver on control planes, etcd on etcd members."""
    from deploys.components import node_exporter
    from deploys.settings import Settings
    from spectra import topology

    settings = Settings(context)
    owners = {int(settings["ssh_port"]): "sshd"}
    exporter_port = node_exporter.listen_port(settings)
    if exporter_port is not None:
        owners[exporter_port] = "node_exporter"
    if topology.runs_kubelet(context) and settings["kubelet_enabled"]:
        owners[int(settings["kubelet_port"])] = "kubelet"
    if topology.has_role(context, topology.CONTROL_PLANE) and settings["control_plane_enabled"]:
        owners[int(settings["apiserver_port"])] = "kube-apiserver"
    if topology.has_role(context, topology.ETCD) and settings["etcd_enabled"]:
        owners[int(settings["etcd_client_port"])] = "etcd"
        owners[int(settings["etcd_peer_port"])] = "etcd"
    return dict(sorted(owners.items()))


@check("SPX-SVC-010")
def _exposed(probe: Probe, check_id: str) -> Outcome:
    allowed = expected_listeners(probe.context)
    exposed = exposed_listeners(probe.listeners(), allowed)
    if exposed:
        return failed(f"also listening beyond loopback: {', '.join(str(item) for item in exposed)}")
    return passed(f"beyond loopback only tcp {', '.join(str(port) for port in allowed)}")


@check("SPX-SVC-011")
def _port_owners(probe: Probe, check_id: str) -> Outcome:
    return evaluate_port_owners(probe.listeners(), expected_listeners(probe.context))


# --- Kubernetes files --------------------------------------------------------------------------------


def _kubelet_config(probe: Probe) -> dict[str, Any] | None:
    if KUBELET_CONFIG not in probe.stat([KUBELET_CONFIG]):
        return None
    return probe.read_yaml(KUBELET_CONFIG)


def _client_ca_paths(probe: Probe) -> list[str]:
    config = _kubelet_config(probe) or {}
    configured = _lookup(config, "authentication.x509.clientCAFile")
    return [str(configured)] if configured else [DEFAULT_CLIENT_CA]


def _file_rule(
    probe: Probe, patterns: Iterable[str], absent: str, max_mode: int | None = None, owner: bool = False,
    required: str | None = None,
) -> Outcome:  # fmt: skip
    """Files matching ``patterns``: checked when present; absent: ``not_applicable`` (``absent``) or, when
    the component needs them (``required`` is the reason), ``fail``."""
    patterns = list(patterns)
    stats = probe.stat(patterns)
    if not stats:
        if required:
            return failed(f"{' '.join(patterns)} missing although {required}")
        return not_applicable(f"{' / '.join(patterns)} absent: {absent}")
    if owner:
        return evaluate_files(stats.values(), user="root", groups=["root"])
    return evaluate_files(stats.values(), max_mode=max_mode)


def _kubelet_absent(probe: Probe) -> str:
    unit = _kubelet_unit(probe)
    return "this file is not used by the installed kubelet" if unit.installed else NO_KUBELET


WORKER_FILES: dict[str, tuple[Callable[[Probe], list[str]], bool, bool]] = {
    # check id -> (paths, ownership check (else mode 600), required when kubelet is installed)
    "4.1.1": (lambda probe: list(KUBELET_UNIT_FILES), False, False),
    "4.1.2": (lambda probe: list(KUBELET_UNIT_FILES), True, False),
    "4.1.3": (lambda probe: list(PROXY_KUBECONFIGS), False, False),
    "4.1.4": (lambda probe: list(PROXY_KUBECONFIGS), True, False),
    "4.1.5": (lambda probe: [KUBELET_KUBECONFIG], False, True),
    "4.1.6": (lambda probe: [KUBELET_KUBECONFIG], True, True),
    "4.1.7": (_client_ca_paths, False, False),
    "4.1.8": (_client_ca_paths, True, False),
    "4.1.9": (lambda probe: [KUBELET_CONFIG], False, False),
    "4.1.10": (lambda probe: [KUBELET_CONFIG], True, False),
}


@check(*WORKER_FILES)
def _worker_file(probe: Probe, check_id: str) -> Outcome:
    paths, ownership, required_with_kubelet = WORKER_FILES[check_id]
    required = "kubelet.service is installed" if required_with_kubelet and _kubelet_unit(probe).installed else None
    if check_id in ("4.1.3", "4.1.4"):
        absent = "kube-proxy has no kubeconfig on this host (not installed, or runs as a DaemonSet)"
    else:
        absent = _kubelet_absent(probe)
    return _file_rule(probe, paths(probe), absent, max_mode=0o600, owner=ownership, required=required)


@check("4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5", "4.2.6", "4.2.10")
def _kubelet_setting(probe: Probe, check_id: str) -> Outcome:
    config = _kubelet_config(probe)
    if config is None:
        if _kubelet_unit(probe).installed:
            return failed(f"kubelet.service is installed but {KUBELET_CONFIG} is missing: settings cannot be checked")
        return not_applicable(f"{KUBELET_CONFIG} absent: {NO_KUBELET}")
    return evaluate_kubelet_config(check_id, config, KUBELET_CONFIG)


@check("4.3.1")
def _proxy_metrics(probe: Probe, check_id: str) -> Outcome:
    stats = probe.stat(PROXY_CONFIGS)
    if not stats:
        return not_applicable(f"{' / '.join(PROXY_CONFIGS)} absent: kube-proxy is not configured on this host")
    path = sorted(stats)[0]
    return evaluate_proxy_metrics(probe.read_yaml(path), path)


def _control_plane_present(probe: Probe) -> bool:
    manifests = probe.stat([f"{MANIFESTS}/kube-apiserver.yaml"])
    return bool(manifests) or any(probe.units()[unit].installed for unit in CONTROL_PLANE_UNITS)


def _etcd_present(probe: Probe) -> bool:
    return bool(probe.stat([f"{MANIFESTS}/etcd.yaml"])) or probe.units()["etcd.service"].installed


NOT_CONTROL_PLANE = "not a control_plane host (CIS section 1 applies to control-plane hosts only)"
NO_CONTROL_PLANE = "no control plane on this host yet (no kube-apiserver manifest or unit)"


def _spec_files(name: str) -> tuple[str, ...]:
    """A component's "pod specification": its static pod manifest (kubeadm) or its systemd unit (ours)."""
    return (f"{MANIFESTS}/{name}.yaml", f"/etc/systemd/system/{name}.service")


CONTROL_PLANE_FILES: dict[str, tuple[tuple[str, ...], bool]] = {
    # check id -> (paths, ownership check (else mode 600))
    "1.1.1": (_spec_files("kube-apiserver"), False),
    "1.1.2": (_spec_files("kube-apiserver"), True),
    "1.1.3": (_spec_files("kube-controller-manager"), False),
    "1.1.4": (_spec_files("kube-controller-manager"), True),
    "1.1.5": (_spec_files("kube-scheduler"), False),
    "1.1.6": (_spec_files("kube-scheduler"), True),
    "1.1.7": (_spec_files("etcd"), False),
    "1.1.8": (_spec_files("etcd"), True),
    "1.1.13": (("/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf"), False),
    "1.1.14": (("/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf"), True),
    "1.1.15": (("/etc/kubernetes/scheduler.conf",), False),
    "1.1.16": (("/etc/kubernetes/scheduler.conf",), True),
    "1.1.17": (("/etc/kubernetes/controller-manager.conf",), False),
    "1.1.18": (("/etc/kubernetes/controller-manager.conf",), True),
}


@check(*CONTROL_PLANE_FILES)
def _control_plane_file(probe: Probe, check_id: str) -> Outcome:
    if "control_plane" not in probe.roles():
        return not_applicable(NOT_CONTROL_PLANE)
    paths, ownership = CONTROL_PLANE_FILES[check_id]
    absent = "not used by this control plane" if _control_plane_present(probe) else NO_CONTROL_PLANE
    return _file_rule(probe, paths, absent, max_mode=0o600, owner=ownership)


@check("1.1.11", "1.1.12")
def _etcd_data_dir(probe: Probe, check_id: str) -> Outcome:
    if not {"control_plane", "etcd"} & set(probe.roles()):
        return not_applicable("not a control_plane or etcd host")
    stats = probe.stat([ETCD_DATA_DIR])
    if ETCD_DATA_DIR not in stats:
        if _etcd_present(probe):
            return failed(f"{ETCD_DATA_DIR} missing although etcd is installed here")
        return not_applicable(f"{ETCD_DATA_DIR} absent: no etcd on this host yet (no etcd manifest or unit)")
    if check_id == "1.1.11":
        return evaluate_files([stats[ETCD_DATA_DIR]], max_mode=0o700)
    return evaluate_files([stats[ETCD_DATA_DIR]], user="etcd", groups=["etcd"])


@check("1.1.19", "1.1.20", "1.1.21")
def _pki(probe: Probe, check_id: str) -> Outcome:
    if "control_plane" not in probe.roles():
        return not_applicable(NOT_CONTROL_PLANE)
    tree = probe.tree(PKI_DIR)
    if not tree:
        if _control_plane_present(probe):
            return failed(f"{PKI_DIR} missing although the control plane is installed here")
        return not_applicable(f"{PKI_DIR} absent: {NO_CONTROL_PLANE}")
    if check_id == "1.1.19":
        return evaluate_files(tree.values(), user="root", groups=["root"])
    suffix = ".crt" if check_id == "1.1.20" else ".key"
    files = [stat for path, stat in tree.items() if path.endswith(suffix) and stat.kind.startswith("regular")]
    if not files:
        return not_applicable(f"no *{suffix} files under {PKI_DIR}")
    return evaluate_files(files, max_mode=0o600)


def run_check(check_id: str, probe: Probe) -> Outcome:
    """The outcome of one check; an error while reading the host is a failure naming the error."""
    try:
        return CHECK_FUNCTIONS[check_id](probe)
    except HostUnreachable as exc:
        return failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - any error reading the host fails the check, with the cause
        return failed(f"error while checking: {type(exc).__name__}: {exc}")
