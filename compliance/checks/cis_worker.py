"""CIS Kubernetes Benchmark section 4: worker node configuration files (4.1), kubelet settings from its
configuration file (4.2) and kube-proxy (4.3).

Files are checked where kubeadm and our deploys put them. Absent, a check is not applicable with the
reason, except a file the installed kubelet cannot run without: then it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compliance.checks.services import NO_KUBELET, unit_state
from compliance.listeners import is_loopback
from compliance.model import CIS, Check, Outcome, failed, not_applicable, passed
from compliance.modes import MODE_600, ROOT_OWNED, PresentFiles
from compliance.probe import Probe

SECTION = "cis-worker"
SECTION_TITLE = "CIS Kubernetes worker node (section 4)"

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

NO_PROXY_KUBECONFIG = "kube-proxy has no kubeconfig on this host (not installed, or runs as a DaemonSet)"


def kubelet_installed(probe: Probe) -> bool:
    return unit_state(probe, "kubelet.service") is not None


def kubelet_absent(probe: Probe) -> str:
    return "this file is not used by the installed kubelet" if kubelet_installed(probe) else NO_KUBELET


def needed_by_kubelet(probe: Probe) -> str | None:
    return "kubelet.service is installed" if kubelet_installed(probe) else None


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def kubelet_config(probe: Probe) -> dict[str, Any] | None:
    """The KubeletConfiguration file, None when there is none."""
    if probe.content(KUBELET_CONFIG) is None:
        return None
    return probe.read_yaml(KUBELET_CONFIG)


def client_ca_paths(probe: Probe) -> list[str]:
    configured = lookup(kubelet_config(probe) or {}, "authentication.x509.clientCAFile")
    return [str(configured)] if configured else [DEFAULT_CLIENT_CA]


FILE_CHECKS: tuple[Check, ...] = (
    Check(
        id="4.1.1",
        section=SECTION,
        title="kubelet service file permissions are 600 or more restrictive",
        rationale="the unit and its drop-ins decide kubelet's flags",
        fix="chmod 600 <kubelet service file>",
        evaluate=PresentFiles(KUBELET_UNIT_FILES, MODE_600, kubelet_absent),
        reference=CIS,
    ),
    Check(
        id="4.1.2",
        section=SECTION,
        title="kubelet service file ownership is root:root",
        rationale="the unit and its drop-ins decide kubelet's flags",
        fix="chown root:root <kubelet service file>",
        evaluate=PresentFiles(KUBELET_UNIT_FILES, ROOT_OWNED, kubelet_absent),
        reference=CIS,
    ),
    Check(
        id="4.1.3",
        section=SECTION,
        title="If the proxy kubeconfig file exists, its permissions are 600 or more restrictive",
        rationale="it holds kube-proxy's credentials",
        fix="chmod 600 <proxy kubeconfig file>",
        evaluate=PresentFiles(PROXY_KUBECONFIGS, MODE_600, NO_PROXY_KUBECONFIG),
        reference=CIS,
    ),
    Check(
        id="4.1.4",
        section=SECTION,
        title="If the proxy kubeconfig file exists, its ownership is root:root",
        rationale="it holds kube-proxy's credentials",
        fix="chown root:root <proxy kubeconfig file>",
        evaluate=PresentFiles(PROXY_KUBECONFIGS, ROOT_OWNED, NO_PROXY_KUBECONFIG),
        reference=CIS,
    ),
    Check(
        id="4.1.5",
        section=SECTION,
        title="The kubelet kubeconfig (kubelet.conf) permissions are 600 or more restrictive",
        rationale="it holds the kubelet's client credentials",
        fix=f"chmod 600 {KUBELET_KUBECONFIG}",
        evaluate=PresentFiles((KUBELET_KUBECONFIG,), MODE_600, kubelet_absent, required=needed_by_kubelet),
        reference=CIS,
    ),
    Check(
        id="4.1.6",
        section=SECTION,
        title="The kubelet kubeconfig (kubelet.conf) ownership is root:root",
        rationale="it holds the kubelet's client credentials",
        fix=f"chown root:root {KUBELET_KUBECONFIG}",
        evaluate=PresentFiles((KUBELET_KUBECONFIG,), ROOT_OWNED, kubelet_absent, required=needed_by_kubelet),
        reference=CIS,
    ),
    Check(
        id="4.1.7",
        section=SECTION,
        title="The client certificate authorities file permissions are 600 or more restrictive",
        rationale="whoever replaces the CA file decides which clients kubelet trusts",
        fix="chmod 600 <client CA file>",
        evaluate=PresentFiles(client_ca_paths, MODE_600, kubelet_absent),
        reference=CIS,
    ),
    Check(
        id="4.1.8",
        section=SECTION,
        title="The client certificate authorities file ownership is root:root",
        rationale="whoever replaces the CA file decides which clients kubelet trusts",
        fix="chown root:root <client CA file>",
        evaluate=PresentFiles(client_ca_paths, ROOT_OWNED, kubelet_absent),
        reference=CIS,
    ),
    Check(
        id="4.1.9",
        section=SECTION,
        title="If the kubelet config.yaml is used, its permissions are 600 or more restrictive",
        rationale="it sets kubelet's authentication and authorization",
        fix=f"chmod 600 {KUBELET_CONFIG}",
        evaluate=PresentFiles((KUBELET_CONFIG,), MODE_600, kubelet_absent),
        reference=CIS,
    ),
    Check(
        id="4.1.10",
        section=SECTION,
        title="If the kubelet config.yaml is used, its ownership is root:root",
        rationale="it sets kubelet's authentication and authorization",
        fix=f"chown root:root {KUBELET_CONFIG}",
        evaluate=PresentFiles((KUBELET_CONFIG,), ROOT_OWNED, kubelet_absent),
        reference=CIS,
    ),
)


# --- 4.2: kubelet settings ----------------------------------------------------------------------------

# (the KubeletConfiguration, "in <its path>") -> the verdict; v1beta1 defaults apply to keys that are not set
Judge = Callable[[Mapping[str, Any], str], Outcome]


@dataclass(frozen=True, eq=False)
class KubeletSetting:
    """A setting of the kubelet configuration file. Only the file: flags on kubelet's command line, which
    override it, are not read."""

    judge: Judge

    def __call__(self, probe: Probe) -> Outcome:
        config = kubelet_config(probe)
        if config is None:
            if kubelet_installed(probe):
                return failed(
                    f"kubelet.service is installed but {KUBELET_CONFIG} is missing: settings cannot be checked"
                )
            return not_applicable(f"{KUBELET_CONFIG} absent: {NO_KUBELET}")
        return self.judge(config, f"in {KUBELET_CONFIG}")


def kubelet_setting(*, id: str, title: str, rationale: str, fix: str) -> Callable[[Judge], Check]:
    """Make the decorated judge a check of the kubelet configuration file (the name then holds the record)."""

    def record(judge: Judge) -> Check:
        return Check(id, SECTION, title, rationale, fix, KubeletSetting(judge), reference=CIS)

    return record


_IN_CONFIG = f"set it in {KUBELET_CONFIG}"


@kubelet_setting(
    id="4.2.1",
    title="kubelet anonymous authentication is off (authentication.anonymous.enabled: false)",
    rationale="anonymous requests to the kubelet API must be refused",
    fix=_IN_CONFIG,
)
def anonymous_auth_off(config: Mapping[str, Any], where: str) -> Outcome:
    value = lookup(config, "authentication.anonymous.enabled")
    if value is True:
        return failed(f"authentication.anonymous.enabled is true {where}")
    return passed(f"authentication.anonymous.enabled is {value if value is not None else 'unset (false)'}")


@kubelet_setting(
    id="4.2.2",
    title="kubelet authorization mode is not AlwaysAllow (authorization.mode: Webhook)",
    rationale="the kubelet API must ask the API server who may do what",
    fix=_IN_CONFIG,
)
def authorization_not_always_allow(config: Mapping[str, Any], where: str) -> Outcome:
    value = lookup(config, "authorization.mode")
    if value == "AlwaysAllow":
        return failed(f"authorization.mode is AlwaysAllow {where}")
    return passed(f"authorization.mode is {value or 'unset (Webhook)'}")


@kubelet_setting(
    id="4.2.3",
    title="kubelet has a client CA file (authentication.x509.clientCAFile)",
    rationale="client certificates must be verified",
    fix=_IN_CONFIG,
)
def client_ca_set(config: Mapping[str, Any], where: str) -> Outcome:
    value = lookup(config, "authentication.x509.clientCAFile")
    if not value:
        return failed(f"authentication.x509.clientCAFile is not set {where}")
    return passed(f"authentication.x509.clientCAFile is {value}")


@kubelet_setting(
    id="4.2.4",
    title="kubelet read-only port is 0 (readOnlyPort: 0)",
    rationale="the read-only port serves pod data without authentication",
    fix=_IN_CONFIG,
)
def read_only_port_off(config: Mapping[str, Any], where: str) -> Outcome:
    value = config.get("readOnlyPort")
    if value not in (None, 0):
        return failed(f"readOnlyPort is {value} {where}")
    return passed(f"readOnlyPort is {value if value is not None else 'unset (0)'}")


@kubelet_setting(
    id="4.2.5",
    title="kubelet streaming connection idle timeout is not 0",
    rationale="idle exec/attach streams must time out",
    fix="set streamingConnectionIdleTimeout (e.g. 4h0m0s)",
)
def streaming_timeout_set(config: Mapping[str, Any], where: str) -> Outcome:
    value = config.get("streamingConnectionIdleTimeout")
    if value is not None and str(value).strip() in ("0", "0s", "0m", "0h", "0h0m0s"):
        return failed(f"streamingConnectionIdleTimeout is {value} {where}")
    return passed(f"streamingConnectionIdleTimeout is {value or 'unset (4h0m0s)'}")


@kubelet_setting(
    id="4.2.6",
    title="kubelet manages iptables util chains (makeIPTablesUtilChains not false)",
    rationale="kubelet keeps the iptables chains it needs consistent",
    fix="remove makeIPTablesUtilChains: false",
)
def iptables_util_chains(config: Mapping[str, Any], where: str) -> Outcome:
    value = config.get("makeIPTablesUtilChains")
    if value is False:
        return failed(f"makeIPTablesUtilChains is false {where}")
    return passed(f"makeIPTablesUtilChains is {value if value is not None else 'unset (true)'}")


@kubelet_setting(
    id="4.2.10",
    title="kubelet client certificate rotation is not disabled (rotateCertificates not false)",
    rationale="expired or leaked kubelet certificates must be replaced",
    fix="remove rotateCertificates: false",
)
def certificate_rotation(config: Mapping[str, Any], where: str) -> Outcome:
    value = config.get("rotateCertificates")
    if value is False:
        return failed(f"rotateCertificates is false {where}")
    return passed(f"rotateCertificates is {value if value is not None else 'unset'}")


# --- 4.3: kube-proxy ------------------------------------------------------------------------------------

# kube-proxy's own default when metricsBindAddress is unset (upstream's, which CIS 4.3.1 names)
PROXY_METRICS_DEFAULT = "127.0.0.1:10249"


def evaluate_proxy_metrics(config: Mapping[str, Any], path: str) -> Outcome:
    value = config.get("metricsBindAddress")
    if not value:
        return passed(f"metricsBindAddress unset in {path} (default {PROXY_METRICS_DEFAULT})")
    text = str(value)
    host = text.rpartition(":")[0].strip("[]") if ":" in text else text
    if host == "localhost" or (host and is_loopback(host)):
        return passed(f"metricsBindAddress {value}")
    return failed(f"metricsBindAddress {value} in {path} (want {PROXY_METRICS_DEFAULT})")


def _proxy_metrics(probe: Probe) -> Outcome:
    states = probe.files(PROXY_CONFIGS)
    if not states:
        return not_applicable(f"{' / '.join(PROXY_CONFIGS)} absent: kube-proxy is not configured on this host")
    path = sorted(states)[0]
    return evaluate_proxy_metrics(probe.read_yaml(path), path)


PROXY_METRICS = Check(
    id="4.3.1",
    section=SECTION,
    title="kube-proxy metrics are bound to localhost (metricsBindAddress 127.0.0.1)",
    rationale="metrics expose the service topology to anyone who can reach the port",
    fix=f"set metricsBindAddress: {PROXY_METRICS_DEFAULT} in the kube-proxy configuration",
    evaluate=_proxy_metrics,
    reference=CIS,
)


CHECKS: tuple[Check, ...] = (
    *FILE_CHECKS,
    anonymous_auth_off,
    authorization_not_always_allow,
    client_ca_set,
    read_only_port_off,
    streaming_timeout_set,
    iptables_util_chains,
    certificate_rotation,
    PROXY_METRICS,
)
