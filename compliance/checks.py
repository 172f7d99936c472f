"""The compliance checks: one registry the test suite, the waivers and the reports share.

Each check has a stable id (the CIS Kubernetes Benchmark number as kube-bench encodes it where one
exists, else ``SPX-<AREA>-<NNN>``), a title, a one-line rationale and a fix hint. The code that runs a
check on a host is in :mod:`compliance.probes`, keyed by the same id.

Statuses a check can end with on a host: ``pass``, ``fail``, ``not_applicable`` (the thing checked is
absent or cannot exist here, with the reason), and, after waivers are applied, ``waived``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["pass", "fail", "not_applicable", "waived"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "waived", "not_applicable")

SECTIONS = {
    "os": "OS baseline",
    "ssh": "SSH server baseline",
    "services": "Node services",
    "cis-worker": "CIS Kubernetes worker node (section 4)",
    "cis-control-plane": "CIS Kubernetes control plane files (section 1.1)",
}


@dataclass(frozen=True)
class Check:
    id: str
    section: str
    title: str
    rationale: str
    fix: str
    reference: str = ""  # the benchmark it comes from, empty for our own baselines


_CIS = "CIS Kubernetes Benchmark v1.9 (kube-bench cis-1.9)"


def _os(number: int, title: str, rationale: str, fix: str) -> Check:
    return Check(f"SPX-OS-{number:03d}", "os", title, rationale, fix)


def _ssh(number: int, title: str, rationale: str, fix: str) -> Check:
    return Check(f"SPX-SSH-{number:03d}", "ssh", title, rationale, fix)


def _svc(number: int, title: str, rationale: str, fix: str) -> Check:
    return Check(f"SPX-SVC-{number:03d}", "services", title, rationale, fix)


def _worker(number: str, title: str, rationale: str, fix: str) -> Check:
    return Check(number, "cis-worker", title, rationale, fix, _CIS)


def _cp(number: str, title: str, rationale: str, fix: str) -> Check:
    return Check(number, "cis-control-plane", title, rationale, fix, _CIS)


_SYSCTL_FIX = "converge sysctl_hardening (deploys/components/hardening_sysctl.py), or `sysctl --system`"
_PERM_FIX = "converge file_permissions (deploys/components/file_permissions.py)"
_SSH_FIX = "converge ssh_hardening (drop-in /etc/ssh/sshd_config.d/00-spectra-hardening.conf, then reload ssh)"

CHECKS: tuple[Check, ...] = (
    # --- OS baseline: network sysctls (Kubernetes-compatible) ------------------------------------
    _os(1, "IPv4 forwarding is on (net.ipv4.ip_forward = 1)",
        "Kubernetes routes pod traffic through the node; hardening must not turn forwarding off",
        "converge os_prerequisites (kubernetes_sysctls in /etc/sysctl.d/90-kubernetes.conf)"),
    _os(2, "Bridged traffic goes through iptables (net.bridge.bridge-nf-call-iptables/ip6tables = 1)",
        "kube-proxy and network policies only see bridged pod traffic with br_netfilter hooks on",
        "converge os_prerequisites (br_netfilter and kubernetes_sysctls)"),
    _os(3, "ICMP redirects are not accepted (accept_redirects, secure_redirects = 0, IPv4 and IPv6)",
        "redirects let a neighbour rewrite the node's routes", _SYSCTL_FIX),
    _os(4, "ICMP redirects are not sent (net.ipv4.conf.{all,default}.send_redirects = 0)",
        "a node is not a router for its LAN; sent redirects leak topology", _SYSCTL_FIX),
    _os(5, "Source-routed packets are refused (accept_source_route = 0, IPv4 and IPv6)",
        "source routing lets a sender choose the path and bypass filtering", _SYSCTL_FIX),
    _os(6, "Reverse path filtering is on (net.ipv4.conf.all.rp_filter = 1 or 2)",
        "drops spoofed source addresses; loose mode (2) stays compatible with CNI routing", _SYSCTL_FIX),
    _os(7, "TCP SYN cookies are on (net.ipv4.tcp_syncookies = 1)",
        "keeps the node reachable under a SYN flood", _SYSCTL_FIX),
    _os(8, "Broadcast pings and bogus ICMP errors are ignored",
        "icmp_echo_ignore_broadcasts = 1 and icmp_ignore_bogus_error_responses = 1 stop smurf/log floods",
        _SYSCTL_FIX),
    _os(9, "Martian packets are logged (net.ipv4.conf.all.log_martians = 1)",
        "impossible source addresses are a sign of spoofing or misrouting worth seeing", _SYSCTL_FIX),
    _os(10, "Swap is off now and in /etc/fstab",
        "kubelet expects no swap by default; memory limits are meaningless with it",
        "converge os_prerequisites (swapoff -a, swap lines commented out in /etc/fstab)"),
    # --- OS baseline: file permissions -----------------------------------------------------------
    _os(20, "/etc/passwd is 0644 or stricter, root:root",
        "world-writable or foreign-owned account database means account takeover", _PERM_FIX),
    _os(21, "/etc/shadow is 0640 or stricter, root:shadow",
        "password hashes must not be readable by ordinary users", _PERM_FIX),
    _os(22, "/etc/group is 0644 or stricter, root:root",
        "group membership decides privileges (sudo, docker...)", _PERM_FIX),
    _os(23, "/etc/gshadow is 0640 or stricter, root:shadow",
        "group password hashes must not be readable by ordinary users", _PERM_FIX),
    _os(24, "/etc/ssh/sshd_config is 0600 or stricter, root:root",
        "the SSH server's configuration decides who may log in", _PERM_FIX),
    # --- OS baseline: legacy services and audit ----------------------------------------------------
    _os(30, "No legacy network service packages (telnet, rsh, tftp, inetd, xinetd, avahi, NIS, talk, rpcbind)",
        "cleartext or unauthenticated protocols with a long history of remote exploits",
        "apt-get purge the package named in the failure"),
    _os(31, "No legacy service ports listening (23, 69/udp, 111, 512-514, 517-518/udp, 5353/udp)",
        "a listener on these ports is a legacy service whatever its package is called",
        "stop and disable the unit holding the port (`ss -tulnp` names it), then remove it"),
    _os(40, "The audit rules file of the deploy is present, root-owned, not writable by others",
        "the Kubernetes, runtime and identity watches must be on disk for auditd to load at boot",
        "converge audit_rules (deploys/components/audit.py)"),
    _os(41, "auditd runs and the deploy's audit rules are loaded in the kernel",
        "rules on disk record nothing until they are loaded",
        "converge audit_rules on a VM or bare-metal host (installs auditd, augenrules --load)"),
    # --- SSH server baseline (sshd -T: the effective configuration) --------------------------------
    _ssh(1, "No weak key exchange (no SHA-1 or group1/group14-sha1/group-exchange-sha1, no nistp curves)",
         "SHA-1 and small/NIST-curve key exchanges are deprecated or distrusted", _SSH_FIX),
    _ssh(2, "No weak ciphers (no CBC modes, 3DES, arcfour, blowfish, cast128)",
         "CBC modes are open to plaintext recovery; the others are broken", _SSH_FIX),
    _ssh(3, "No weak MACs (no SHA-1, MD5, umac-64, ripemd160)",
         "SHA-1/MD5 based MACs and 64-bit tags are deprecated", _SSH_FIX),
    _ssh(4, "Password authentication is off (PasswordAuthentication no)",
         "keys only: passwords can be guessed and phished", _SSH_FIX),
    _ssh(5, "Keyboard-interactive authentication is off (KbdInteractiveAuthentication no)",
         "keyboard-interactive is password authentication by another name (PAM)", _SSH_FIX),
    _ssh(6, "Root logs in with keys only or not at all (PermitRootLogin prohibit-password or no)",
         "a root password over SSH is the first thing attackers try", _SSH_FIX),
    _ssh(7, "Empty passwords are refused (PermitEmptyPasswords no)",
         "an account without a password must not be an open door", _SSH_FIX),
    _ssh(8, "At most 4 authentication attempts per connection (MaxAuthTries <= 4)",
         "slows down online guessing", _SSH_FIX),
    _ssh(9, "X11 forwarding is off (X11Forwarding no)",
         "servers have no display; forwarding exposes the client's X server", _SSH_FIX),
    _ssh(10, "Host-based authentication is off and rhosts files are ignored",
         "trust by source host name is spoofable (HostbasedAuthentication no, IgnoreRhosts yes)", _SSH_FIX),
    # --- Node services ---------------------------------------------------------------------------
    _svc(1, "containerd is active and enabled", "the container runtime kubelet needs",
         "converge container_runtime; `journalctl -u containerd` for why it stopped"),
    _svc(2, "node_exporter is active and enabled", "host metrics for monitoring and alerting",
         "converge node_exporter; `journalctl -u node_exporter`"),
    _svc(3, "chrony is active and enabled", "certificates, etcd and logs need correct time",
         "converge os_prerequisites; `chronyc tracking`"),
    _svc(4, "ssh is active and enabled", "the only way in for administration and the deploys",
         "systemctl enable --now ssh (from a console)"),
    _svc(5, "nftables is active and enabled, table inet spectra is loaded with policy drop",
         "the node firewall must be in force now and after a reboot",
         "converge firewall (deploys/components/firewall.py); `nft list table inet spectra`"),
    _svc(6, "The Fluentd log agent (fluent-package) is installed, active and enabled",
         "container and kubelet logs must leave the node for incident response",
         "converge fluentd with fluentd_enabled true and its repository reachable"),
    _svc(7, "kubelet is active and enabled", "the node agent of Kubernetes",
         "bootstrap the node into the cluster; `journalctl -u kubelet`"),
    _svc(10, "Only expected services listen beyond loopback (ssh, node_exporter; kubelet, apiserver, etcd by role)",
         "every other exposed listener is attack surface the firewall alone should not have to hide",
         "stop the process holding the port (`ss -tulnp` names it) or bind it to 127.0.0.1"),
    _svc(11, "Each expected port is held by its own program (22 sshd, 9100 node_exporter, 10250 kubelet, ...)",
         "an expected port taken by another program is an impostor or a misconfiguration",
         "find the process with `ss -tlnp` and stop it; restart the service that owns the port"),
    # --- CIS section 4.1: worker node configuration files ------------------------------------------
    _worker("4.1.1", "kubelet service file permissions are 600 or more restrictive",
            "the unit and its drop-ins decide kubelet's flags", "chmod 600 <kubelet service file>"),
    _worker("4.1.2", "kubelet service file ownership is root:root",
            "the unit and its drop-ins decide kubelet's flags", "chown root:root <kubelet service file>"),
    _worker("4.1.3", "If the proxy kubeconfig file exists, its permissions are 600 or more restrictive",
            "it holds kube-proxy's credentials", "chmod 600 <proxy kubeconfig file>"),
    _worker("4.1.4", "If the proxy kubeconfig file exists, its ownership is root:root",
            "it holds kube-proxy's credentials", "chown root:root <proxy kubeconfig file>"),
    _worker("4.1.5", "The kubelet kubeconfig (kubelet.conf) permissions are 600 or more restrictive",
            "it holds the kubelet's client credentials", "chmod 600 /etc/kubernetes/kubelet.conf"),
    _worker("4.1.6", "The kubelet kubeconfig (kubelet.conf) ownership is root:root",
            "it holds the kubelet's client credentials", "chown root:root /etc/kubernetes/kubelet.conf"),
    _worker("4.1.7", "The client certificate authorities file permissions are 600 or more restrictive",
            "whoever replaces the CA file decides which clients kubelet trusts", "chmod 600 <client CA file>"),
    _worker("4.1.8", "The client certificate authorities file ownership is root:root",
            "whoever replaces the CA file decides which clients kubelet trusts", "chown root:root <client CA file>"),
    _worker("4.1.9", "If the kubelet config.yaml is used, its permissions are 600 or more restrictive",
            "it sets kubelet's authentication and authorization", "chmod 600 /var/lib/kubelet/config.yaml"),
    _worker("4.1.10", "If the kubelet config.yaml is used, its ownership is root:root",
            "it sets kubelet's authentication and authorization", "chown root:root /var/lib/kubelet/config.yaml"),
    # --- CIS section 4.2: kubelet settings, from the kubelet config file when present --------------
    _worker("4.2.1", "kubelet anonymous authentication is off (authentication.anonymous.enabled: false)",
            "anonymous requests to the kubelet API must be refused", "set it in /var/lib/kubelet/config.yaml"),
    _worker("4.2.2", "kubelet authorization mode is not AlwaysAllow (authorization.mode: Webhook)",
            "the kubelet API must ask the API server who may do what", "set it in /var/lib/kubelet/config.yaml"),
    _worker("4.2.3", "kubelet has a client CA file (authentication.x509.clientCAFile)",
            "client certificates must be verified", "set it in /var/lib/kubelet/config.yaml"),
    _worker("4.2.4", "kubelet read-only port is 0 (readOnlyPort: 0)",
            "the read-only port serves pod data without authentication", "set it in /var/lib/kubelet/config.yaml"),
    _worker("4.2.5", "kubelet streaming connection idle timeout is not 0",
            "idle exec/attach streams must time out", "set streamingConnectionIdleTimeout (e.g. 4h0m0s)"),
    _worker("4.2.6", "kubelet manages iptables util chains (makeIPTablesUtilChains not false)",
            "kubelet keeps the iptables chains it needs consistent", "remove makeIPTablesUtilChains: false"),
    _worker("4.2.10", "kubelet client certificate rotation is not disabled (rotateCertificates not false)",
            "expired or leaked kubelet certificates must be replaced", "remove rotateCertificates: false"),
    _worker("4.3.1", "kube-proxy metrics are bound to localhost (metricsBindAddress 127.0.0.1)",
            "metrics expose the service topology to anyone who can reach the port",
            "set metricsBindAddress: 127.0.0.1:10249 in the kube-proxy configuration"),
    # --- CIS section 1.1: control plane configuration files ----------------------------------------
    _cp("1.1.1", "API server pod specification (manifest or unit) permissions are 600 or more restrictive",
        "it sets every API server flag", "chmod 600 the manifest or /etc/systemd/system/kube-apiserver.service"),
    _cp("1.1.2", "API server pod specification (manifest or unit) ownership is root:root",
        "it sets every API server flag", "chown root:root the manifest or /etc/systemd/system/kube-apiserver.service"),
    _cp("1.1.3", "Controller manager pod specification (manifest or unit) permissions are 600 or more restrictive",
        "it sets the controller manager's flags",
        "chmod 600 the manifest or /etc/systemd/system/kube-controller-manager.service"),
    _cp("1.1.4", "Controller manager pod specification (manifest or unit) ownership is root:root",
        "it sets the controller manager's flags",
        "chown root:root the manifest or /etc/systemd/system/kube-controller-manager.service"),
    _cp("1.1.5", "Scheduler pod specification (manifest or unit) permissions are 600 or more restrictive",
        "it sets the scheduler's flags", "chmod 600 the manifest or /etc/systemd/system/kube-scheduler.service"),
    _cp("1.1.6", "Scheduler pod specification (manifest or unit) ownership is root:root",
        "it sets the scheduler's flags", "chown root:root the manifest or /etc/systemd/system/kube-scheduler.service"),
    _cp("1.1.7", "etcd pod specification (manifest or unit) permissions are 600 or more restrictive",
        "it sets etcd's flags", "chmod 600 the manifest or /etc/systemd/system/etcd.service"),
    _cp("1.1.8", "etcd pod specification (manifest or unit) ownership is root:root",
        "it sets etcd's flags", "chown root:root the manifest or /etc/systemd/system/etcd.service"),
    _cp("1.1.11", "etcd data directory permissions are 700 or more restrictive",
        "the data directory is the whole cluster state, secrets included", "chmod 700 /var/lib/etcd"),
    _cp("1.1.12", "etcd data directory ownership is etcd:etcd",
        "the data directory is the whole cluster state, secrets included", "chown etcd:etcd /var/lib/etcd"),
    _cp("1.1.13", "admin.conf (and super-admin.conf) permissions are 600 or more restrictive",
        "cluster-admin credentials", "chmod 600 /etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf"),
    _cp("1.1.14", "admin.conf (and super-admin.conf) ownership is root:root",
        "cluster-admin credentials", "chown root:root /etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf"),
    _cp("1.1.15", "scheduler.conf permissions are 600 or more restrictive",
        "the scheduler's credentials", "chmod 600 /etc/kubernetes/scheduler.conf"),
    _cp("1.1.16", "scheduler.conf ownership is root:root",
        "the scheduler's credentials", "chown root:root /etc/kubernetes/scheduler.conf"),
    _cp("1.1.17", "controller-manager.conf permissions are 600 or more restrictive",
        "the controller manager's credentials", "chmod 600 /etc/kubernetes/controller-manager.conf"),
    _cp("1.1.18", "controller-manager.conf ownership is root:root",
        "the controller manager's credentials", "chown root:root /etc/kubernetes/controller-manager.conf"),
    _cp("1.1.19", "The Kubernetes PKI directory and its files are owned by root:root",
        "whoever owns the PKI can mint cluster identities", "chown -R root:root /etc/kubernetes/pki"),
    _cp("1.1.20", "Kubernetes PKI certificate files are 600 or more restrictive",
        "certificates decide whom the cluster trusts", "chmod 600 /etc/kubernetes/pki/*.crt"),
    _cp("1.1.21", "Kubernetes PKI key files are 600 or more restrictive",
        "private keys are the cluster's identities", "chmod 600 /etc/kubernetes/pki/*.key"),
)  # fmt: skip

BY_ID: dict[str, Check] = {check.id: check for check in CHECKS}


def check_ids() -> list[str]:
    return [check.id for check in CHECKS]


def get(check_id: str) -> Check:
    try:
        return BY_ID[check_id]
    except KeyError:
        raise KeyError(f"unknown check id {check_id!r}") from None
